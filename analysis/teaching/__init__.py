"""Teaching: the notebooks' interactive explorers (``widgets``) and exercise graders (``exercises``)."""
