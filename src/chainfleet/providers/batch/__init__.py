"""Provider batch APIs (OpenAI Batches, Anthropic Message Batches, the offline ``sim``) behind one
interface, :class:`BatchAdapter`, and the factory that picks a provider's adapter.

The concrete adapters live in their own modules (``openai``, ``anthropic``, ``sim``) and are
imported only by :func:`batch_adapter_for`, when a provider of their kind is used in batch mode.
"""

from chainfleet.providers.batch.base import BatchAdapter, BatchExpired, BatchItem, BatchStatus, Outcome
from chainfleet.providers.batch.factory import batch_adapter_for

__all__ = ["BatchAdapter", "BatchExpired", "BatchItem", "BatchStatus", "Outcome", "batch_adapter_for"]
