"""What a segmentation run reports: findings per case, the QC picture, the run's results table."""
