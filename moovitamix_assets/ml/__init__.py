"""The recommendation model layer: pure functions over an interactions DataFrame.

Input contract (one row per user and track the user listened to):
``user_id`` (int64), ``track_id`` (int64), ``play_count`` (int >= 1), ``weight`` (float > 0, the
implicit-feedback confidence) and ``last_position`` (the latest index of the track in the user's
append-only listening list; larger means more recent).
"""

INTERACTION_COLUMNS = ("user_id", "track_id", "play_count", "weight", "last_position")
RECOMMENDATION_COLUMNS = ("user_id", "track_id", "score", "rank")
