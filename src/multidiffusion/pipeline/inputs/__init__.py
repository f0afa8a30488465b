"""Files the user hands over: region files, stored masks, images."""
