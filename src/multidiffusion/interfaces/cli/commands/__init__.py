"""One module per command beside panorama and regions: batch, eval, eval-suite, eval-coherence, image commands."""
