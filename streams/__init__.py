"""yurong stream layer: the Faust app, serde, masking, validation, profile merge, risk, CLI."""
