"""Volume-level augmentation: simulated acquisitions of native scans before preprocessing."""
