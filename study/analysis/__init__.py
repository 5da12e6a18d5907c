"""Analysis layer (never imports torch): the equivalence analysis on the cells table (`equivalence`) and the
simulator of studies with planted answers (`simulate`)."""
