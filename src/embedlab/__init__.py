"""embedlab: CIFAR-10 transfer learning and MovieLens item embeddings, done properly."""

__version__ = "0.1.0"
