"""Staged campaigns over AWS IoT thing groups: plan, launch waves, gate, halt, roll back."""
