"""Default column names, in one place.

Every function that touches a column takes its name as a parameter defaulting to one of these,
as Spark ALS's ``userCol``/``itemCol`` do.
"""

USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
WEIGHT = "weight"

USER_IDX = "user_idx"
ITEM_IDX = "item_idx"

PREDICTION = "prediction"
SCORE = "score"
RANK = "rank"
MODEL_VERSION = "model_version"
RUN_DATE = "run_date"
REASON = "reason"

# Columns of the model's factor tables (``user_factors``/``item_factors``) and of prepare's
# ``rated/`` table (a user's rated item indices, ``array<int>``).
FACTORS = "factors"
BIAS = "bias"
ITEMS = "items"
