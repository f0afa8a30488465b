"""The page's tabs, one module each: ``build()`` lays the tab out and returns its components, ``wire(tab, page)``
connects their events to the handlers beside them."""
