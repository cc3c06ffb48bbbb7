"""Tests of train/data."""
