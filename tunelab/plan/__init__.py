"""`tunelab plan`: will a recipe fit in memory, how long will it take, and which micro-batch to use."""
