"""Training: synthetic scenes with exact masks (`synthetic`), the losses (`losses`), the two
phases of HQ-SAM's recipe (`recipe`) and the demo model's training script (`demo_model`)."""
