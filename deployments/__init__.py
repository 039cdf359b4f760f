"""Model pools and the engines behind them (vLLM, simulator); the local fleet."""
