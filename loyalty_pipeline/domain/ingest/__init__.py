"""Reading the input files: Kafka envelopes and text lines."""
