import numpy as np

from imginav_core.palette import IGNORE_INDEX, NUM_CLASSES, PALETTE, class_to_rgb, rgb_to_class


def test_every_palette_colour_maps_to_its_class_and_back():
    class_map, unknown = rgb_to_class(PALETTE.reshape(1, NUM_CLASSES, 3))
    assert unknown == 0
    assert class_map.tolist() == [list(range(NUM_CLASSES))]
    assert (class_to_rgb(class_map) == PALETTE.reshape(1, NUM_CLASSES, 3)).all()


def test_off_palette_pixels_are_ignored_and_counted():
    rng = np.random.default_rng(0)
    image = PALETTE[rng.integers(0, NUM_CLASSES, size=(2, 16, 16))]
    image[0, 3, 4] = (229, 26, 28)  # one step off "bed": anti-aliasing
    image[1, 0, :5] = (0, 0, 0)
    class_map, unknown = rgb_to_class(image)
    assert class_map.shape == (2, 16, 16)
    assert unknown == 6
    assert class_map[0, 3, 4] == IGNORE_INDEX and (class_map[1, 0, :5] == IGNORE_INDEX).all()
    assert (class_map[class_map != IGNORE_INDEX] < NUM_CLASSES).all()
