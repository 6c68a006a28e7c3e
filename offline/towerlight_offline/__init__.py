"""Towerlight offline side: data, training, export, evaluation, publishing, and the CLI."""
