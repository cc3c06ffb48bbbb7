"""Tests of train/losses."""
