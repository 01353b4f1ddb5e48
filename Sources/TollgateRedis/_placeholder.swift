enum _PlaceholderRedis {}
