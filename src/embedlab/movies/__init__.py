"""Part 2: movie embeddings from MovieLens co-likes (load -> X -> fit -> recommend -> evaluate)."""
