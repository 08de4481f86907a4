"""SQL both engines share, one mixin per area of `Tx`, written against `SqlTx`'s primitives."""
