"""Analyses on trained models: linear probes, bootstrap intervals, utilization rates, tables and plots."""
