"""The training package's error for data it cannot work with."""


class TrainingError(RuntimeError):
    """Training or forecasting cannot run on the data at hand (too little history, no SKUs...)."""
