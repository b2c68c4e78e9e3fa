"""Training code for every network of the method (prior, DBLM, DGSA) and the DSST table builder."""
