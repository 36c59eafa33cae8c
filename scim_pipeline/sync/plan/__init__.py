"""Planning: the roster mapped and scoped, change sets against what we manage (pandas), and the guards over them."""
