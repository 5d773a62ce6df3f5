"""Part 1: CIFAR-10 transfer learning (load -> features -> probe / fine-tune -> evaluate -> render)."""
