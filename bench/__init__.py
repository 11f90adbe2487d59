"""The benchmark harness of issue 6: Hopper side by side with the Python job systems."""
