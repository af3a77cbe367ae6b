"""The one training loop (:mod:`.loop`), evaluation, optimisers/schedulers and checkpoints."""
