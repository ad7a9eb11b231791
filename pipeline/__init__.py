"""Ray Data annotation pipeline (see the pipeline issue); the model lives in samhq_core."""
