"""Bring a brain MRI into the model's space (DESIGN.md §1 "Preprocessing") and map results back."""
