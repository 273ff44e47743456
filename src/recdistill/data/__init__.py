"""Data: download and canonical tables, splits, features and on-device samplers."""
