"""inpaint_anon."""
