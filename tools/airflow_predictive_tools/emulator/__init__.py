"""The local Compute Engine emulator: Google's REST API on 127.0.0.1 for the real google-cloud-compute client."""
