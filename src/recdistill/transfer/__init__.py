"""Transfer losses: how a teacher (meta model) teaches a student (main model)."""
