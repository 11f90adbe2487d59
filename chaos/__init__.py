"""Long fault runs (`make chaos`): load generators that ride out failures, and the figures."""
