"""A sample's slide-level figures: the field summary and its call (`summary`), the differential and
call of a slide counted cell by cell with reviews winning (`cells`), and the gallery's thumbnails cut
from the stored frames (`thumbs`)."""
