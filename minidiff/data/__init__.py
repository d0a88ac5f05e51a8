"""Where the images come from: the built-in sprites, the course's .npy files and image folders
(`datasets`, reading through `npy`, `folders`, `resize` and `limits`), and how images are turned
into grids, PNGs and GIFs (`images`). Plumbing, not math."""
