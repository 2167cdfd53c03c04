"""score's room: the top-N kernel (pure torch, no pyspark), the Spark scoring glue around it,
fold-in for new users, and similar items."""
