"""The customer profile and co-purchase recommendations."""
