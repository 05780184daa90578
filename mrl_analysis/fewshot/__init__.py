"""Theme: nearest-class-mean few-shot and FLUID long-tail evaluation per size."""
