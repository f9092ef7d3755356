"""Optax's ``contrib``: newer optimizers, under the same path as in Optax.

``from research import optim as optax; optax.contrib.muon(...)`` works as in
Optax 0.2.8. Each module lists its public names in ``__all__``.
"""

# --- group 1 (acprop, ademamix, adopt, cocob, dadapt, dog, dowg, dpsgd, galore, madgrad, mechanize)
# --- end group 1

# --- group 2 (momo, muon, prodigy, reduce_on_plateau, sam, schedule_free, sophia, complex)
# --- end group 2
