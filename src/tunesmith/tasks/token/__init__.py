"""Token classification (named entities): a tag per word, entities with character offsets out."""
from tunesmith.tasks.token.task import TokenClassification

__all__ = ["TokenClassification"]
