"""Built-in 16x16 pixel-art sprites in the course's five classes, drawn procedurally.

The course ("How Diffusion Models Work", DeepLearning.AI) trains on 89,400 16x16 sprites labelled
hero, non-hero, food, spell and side-facing. Those files are not ours to ship, so minidiff draws
its own sprites of the same kinds, on the same white background, in the same uint8 (N, H, W, C)
layout, so that `python -m minidiff train` works on a fresh clone with no download.

Every class mixes several kinds (a hero may carry a sword, a shield, a staff or a cape; non-heroes
are slimes, ghosts, bats, many-eyed beasts and skeletons; food is fruit, bread, drinks, meat and
cheese or eggs; spells are orbs, sparkles, flames, rays and rings; side-facing figures walk left or
right) with random palettes, sizes and positions. Drawing is vectorised: every kind is a set of
boolean masks over a (m, 16, 16) batch of coordinate grids, painted in order, back to front.
"""

from __future__ import annotations

import numpy as np

from minidiff.utils.errors import MinidiffError

CLASSES = ("hero", "non-hero", "food", "spell", "side-facing")
SIZE = 16  # sprites are SIZE x SIZE pixels
MAX_SPRITES = 200_000  # drawing holds (n, 16, 16, 3) int64 canvases: about 1.2 GiB at the most
WHITE = 255  # background, as in the course's sprites

# Palettes (RGB); every pick is jittered per sprite, so no two sprites share exact colours.
SKIN = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
        (255, 205, 180), (120, 200, 120)]
HAIR = [(40, 30, 20), (90, 55, 25), (200, 160, 60), (235, 215, 140), (170, 50, 30),
        (70, 70, 80), (215, 215, 220), (130, 70, 170), (40, 100, 190)]
CLOTH = [(200, 40, 40), (40, 90, 200), (40, 150, 60), (230, 170, 30), (140, 60, 170),
         (30, 160, 170), (230, 110, 30), (120, 80, 50), (90, 90, 100), (220, 80, 150)]
METAL = [(175, 175, 190), (205, 205, 215), (215, 175, 60), (150, 120, 90)]
VIVID = [(230, 40, 200), (40, 220, 230), (150, 60, 240), (110, 230, 40), (250, 200, 30),
         (250, 110, 30), (40, 110, 250), (240, 40, 60), (250, 90, 170)]
OUTLINE = (40, 30, 50)

_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)  # (16, 16) row and column of every pixel


# ---- Drawing primitives: masks over (m, 16, 16) grids, colours (m, 3) ----

def _pick(rng, palette, m, jitter=22):
    """One colour per sprite from `palette`, jittered: (m, 3) int."""
    colours = np.asarray(palette, np.int64)[rng.integers(0, len(palette), m)]
    return np.clip(colours + rng.integers(-jitter, jitter + 1, (m, 3)), 0, 250)


def _col(values):
    """Per-sprite values (m,) -> (m, 1, 1), to broadcast against a (m, 16, 16) grid."""
    return np.asarray(values).reshape(-1, 1, 1)


def _grid(rng, m, shift=1, lift=(0, 2), flip=None):
    """Row and column grids (m, 16, 16), each sprite moved by a random offset (and mirrored)."""
    x = np.broadcast_to(_X, (m, SIZE, SIZE))
    if flip is not None:
        x = np.where(flip[:, None, None], SIZE - 1 - _X, _X)
    dx = _col(rng.integers(-shift, shift + 1, m))
    dy = _col(rng.integers(lift[0], lift[1], m))
    return _Y - dy, x - dx


def _box(y, x, y0, y1, x0, x1):
    return (y >= y0) & (y <= y1) & (x >= x0) & (x <= x1)


def _ellipse(y, x, cy, cx, ry, rx):
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def _paint(img, mask, colour):
    """Paint `colour` (m, 3) where `mask` (m, 16, 16) holds; later paint covers earlier."""
    np.copyto(img, colour[:, None, None, :].astype(img.dtype), where=mask[..., None])


def _mix(colour, weight):
    """Blend towards the white background: weight 1 is `colour`, 0 is white."""
    return np.clip(WHITE + (colour - WHITE) * weight, 0, 250).astype(np.int64)


def _blank(m):
    return np.full((m, SIZE, SIZE, 3), WHITE, np.int64)


def _outline(img, colour=OUTLINE):
    """Draw a one-pixel dark outline around everything that is not background."""
    solid = (img != WHITE).any(-1)  # (m, 16, 16)
    grown = solid.copy()
    grown[:, 1:] |= solid[:, :-1]
    grown[:, :-1] |= solid[:, 1:]
    grown[:, :, 1:] |= solid[:, :, :-1]
    grown[:, :, :-1] |= solid[:, :, 1:]
    _paint(img, grown & ~solid, np.broadcast_to(np.asarray(colour), (len(img), 3)))
    return img


# ---- hero: front-facing humanoid ----

def _hero(rng, m):
    img = _blank(m)
    y, x = _grid(rng, m)
    c = x - 7.5  # signed distance from the body's axis (half-integers)
    a = np.abs(c)
    w = _col(rng.choice([2.5, 3.5], m, p=[0.75, 0.25]))  # torso half-width
    skin, hair, shirt = _pick(rng, SKIN, m), _pick(rng, HAIR, m), _pick(rng, CLOTH, m)
    pants, trim, metal = _pick(rng, CLOTH, m), _pick(rng, CLOTH, m), _pick(rng, METAL, m, 12)
    odds = np.array([0.25, 0.45, 0.35, 0.2])[:, None, None, None]  # cape, sword, shield, staff
    has = rng.random((4, m))[..., None, None] < odds
    cape, sword, shield, staff = has[0], has[1], has[2], has[3] & ~has[1]
    _paint(img, cape & _box(y, a, 7, 13, 0, w + 1), trim)
    _paint(img, _box(y, a, 11, 11, 0, 2.5) | _box(y, a, 12, 13, 1.5, 2.5), pants)
    _paint(img, _box(y, a, 14, 14, 1.5, 2.5), _mix(pants, 1.6))
    _paint(img, _box(y, a, 7, 10, 0, w), shirt)
    _paint(img, _box(y, a, 7, 9, 0, 0.5) & _col(rng.random(m) < 0.4), trim)  # tunic stripe
    _paint(img, _box(y, a, 10, 10, 0, w) & _col(rng.random(m) < 0.6), _mix(trim, 1.5))  # belt
    _paint(img, (a == w + 1) & (y >= 7) & (y <= 9), shirt)
    _paint(img, (a == w + 1) & (y == 10), skin)
    _paint(img, _box(y, a, 2, 6, 0, 2.5) & ~((y == 6) & (a == 2.5)), skin)
    _paint(img, (y == 4) & (a == 1.5), _mix(hair, 2.0))  # eyes
    _hero_hair(rng, img, y, a, hair, trim, metal)
    blade, hilt = (c == w + 2) & (y >= 2) & (y <= 8), (y == 9) & (np.abs(c - w - 2) <= 1)
    _paint(img, sword & blade, _mix(metal, 0.8))
    _paint(img, sword & hilt, _pick(rng, METAL[2:], m))
    _paint(img, staff & (c == w + 2) & (y >= 2) & (y <= 14), np.array([[120, 80, 40]] * m))
    _paint(img, staff & (np.abs(c - w - 2) <= 1) & (np.abs(y - 1) + np.abs(c - w - 2) <= 1),
           _pick(rng, VIVID, m))
    plate = shield & _box(y, -c, 7, 11, w + 2, w + 4) & ~((y == 11) & (-c != w + 3))
    _paint(img, plate, _pick(rng, CLOTH + METAL, m))
    _paint(img, shield & (y == 9) & (-c == w + 3), _pick(rng, METAL[1:3], m))
    return _outline(img)


def _hero_hair(rng, img, y, a, hair, trim, metal):
    """Five hair styles: short, long, pointed hat, helmet, spiky."""
    style = _col(rng.integers(0, 5, len(img)))
    short = _box(y, a, 1, 2, 0, 2.5) | ((y == 3) & (a == 2.5))
    long_ = short | _box(y, a, 2, 8, 2.5, 3.5)
    hat = ((y == 2) & (a <= 3.5)) | ((y == 1) & (a <= 2.5)) | ((y == 0) & (a <= 1.5))
    helmet = _box(y, a, 1, 3, 0, 2.5) & ~((y == 3) & (a == 1.5))
    spiky = ((y == 2) & (a <= 2.5)) | ((y == 1) & (a <= 2.5) & (((a - 0.5) % 2) == 0))
    _paint(img, ((style == 0) & short) | ((style == 1) & long_) | ((style == 4) & spiky), hair)
    _paint(img, (style == 2) & hat, trim)
    _paint(img, (style == 3) & helmet, metal)


# ---- non-hero: creatures and monsters ----

def _slime(rng, m, y, x, img):
    cx, ry, rx = _col(7.5 + rng.integers(-1, 2, m)), _col(rng.uniform(3.5, 5.5, m)), _col(
        rng.uniform(4.5, 6.8, m))
    cy = 13.5 - ry * 0.8
    body = _ellipse(y, x, cy, cx, ry, rx) & (y <= 13)
    colour = _pick(rng, VIVID + [(60, 200, 90), (70, 130, 240)], m)
    _paint(img, body, colour)
    _paint(img, body & (y >= cy + ry * 0.4), _mix(colour, 1.3))
    eye_y = np.round(cy - 0.5)
    _paint(img, ((y == eye_y) | (y == eye_y + 1)) & (np.abs(x - cx) == 1.5), np.zeros((m, 3)))
    _paint(img, (y == np.round(cy - ry * 0.6)) & (x == np.round(cx - rx * 0.5)), _mix(colour, 0.3))


def _ghost(rng, m, y, x, img):
    cx, r = _col(7.5 + rng.integers(-1, 2, m)), _col(rng.uniform(4.2, 5.6, m))
    cy = _col(rng.integers(6, 8, m)) + 0.0
    wave = _col(rng.integers(0, 2, m))
    body = _ellipse(y, x, cy, cx, r, r) | ((y >= cy) & (y <= 13) & (np.abs(x - cx) <= r))
    body &= ~((y == 13) & ((x + wave) % 2 == 0))
    colour = _pick(rng, [(225, 230, 250), (215, 200, 245), (210, 245, 225), (245, 225, 230)], m, 10)
    _paint(img, body, colour)
    eyes = (np.abs(x - cx) == 1.5) & ((y == cy - 1) | (y == cy))
    _paint(img, eyes, _pick(rng, [(20, 20, 40), (200, 30, 40)], m, 10))
    _paint(img, (y == cy + 2) & (np.abs(x - cx) <= 0.5) & _col(rng.random(m) < 0.6),
           np.full((m, 3), 40))


def _bat(rng, m, y, x, img):
    cx, cy = _col(7.5 + rng.integers(-1, 2, m)), _col(rng.integers(6, 10, m)) + 0.5
    span = _col(rng.integers(5, 8, m)) + 0.5
    a = np.abs(x - cx)
    body = _ellipse(y, x, cy, cx, 2.6, 2.1) | ((np.abs(y - cy + 3) <= 0.5) & (a == 1.5))
    wing = (a >= 1.5) & (a <= span) & (y >= cy - 2 - (a - 1.5) * 0.4) & (
        y <= cy + 1.5 - (a % 2) * 1.2 - (a - 1.5) * 0.2)
    colour = _pick(rng, [(70, 40, 90), (90, 60, 40), (50, 50, 60), (120, 30, 40)], m)
    _paint(img, wing, _mix(colour, 0.8))
    _paint(img, body, colour)
    eyes = (np.abs(y - cy + 0.5) <= 0.5) & (a == 0.5) & (y < cy)
    _paint(img, eyes, _pick(rng, [(250, 40, 40), (250, 220, 40)], m))
    _paint(img, (y == cy + 1.5) & (a == 0.5), np.full((m, 3), 245))


def _beholder(rng, m, y, x, img):
    cx, cy = _col(7.5 + rng.integers(-1, 2, m)), _col(rng.integers(7, 9, m)) + 0.5
    r = _col(rng.uniform(4.0, 5.4, m))
    colour = _pick(rng, CLOTH + VIVID, m)
    legs = (y >= cy) & (y <= 14) & (np.abs(x - cx) <= r - 1) & ((x - cx + 0.5) % 2 == 0)
    _paint(img, legs & _col(rng.random(m) < 0.6), _mix(colour, 1.3))
    _paint(img, _ellipse(y, x, cy, cx, r, r), colour)
    _paint(img, _ellipse(y, x, cy, cx, 1.6, 1.6), np.full((m, 3), 245))
    _paint(img, (np.abs(y - cy) <= 0.5) & (np.abs(x - cx) <= 0.5), np.full((m, 3), 10))
    n_eyes = _col(rng.integers(2, 5, m))
    for k in range(4):  # small extra eyes around the top of the body
        ex = cx + (k - 1.5) * 2.2 + 0.0
        ey = np.round(cy - r * 0.55 - (k % 2))
        on = k < n_eyes
        _paint(img, on & (y == ey) & (np.abs(x - np.round(ex - 0.5) - 0.5) <= 0.5),
               np.full((m, 3), 245))
        _paint(img, on & (y == ey) & (x == np.round(ex - 0.5)), np.full((m, 3), 20))
    _paint(img, (y == np.round(cy + r * 0.6)) & (np.abs(x - cx) <= 1.5) & ((x % 2) == 0),
           np.full((m, 3), 245))


def _skeleton(rng, m, y, x, img):
    y = y + 0.0
    a = np.abs(x - 7.5 - _col(rng.integers(-1, 2, m)))
    bone = _pick(rng, [(235, 230, 210), (200, 200, 195), (190, 215, 170)], m, 10)
    frame = (_box(y, a, 2, 5, 0, 2.5) | ((y == 6) & (a <= 1.5)) | _box(y, a, 7, 11, 0, 0.5)
             | ((y == 8) | (y == 10)) & (a <= 2.5) | _box(y, a, 7, 7, 0, 3.5)
             | _box(y, a, 8, 10, 3.5, 3.5) | _box(y, a, 11, 11, 0, 1.5)
             | _box(y, a, 12, 14, 1.5, 1.5))
    _paint(img, frame, bone)
    glow = _pick(rng, [(10, 10, 10), (230, 30, 30), (40, 220, 230)], m, 5)
    _paint(img, (a == 1.5) & ((y == 3) | (y == 4)), glow)
    _paint(img, (y == 6) & (a == 0.5), np.full((m, 3), 60))


def _non_hero(rng, m):
    img = _blank(m)
    y, x = _grid(rng, m, shift=0, lift=(0, 2))
    kinds = rng.integers(0, 5, m)
    for k, draw in enumerate((_slime, _ghost, _bat, _beholder, _skeleton)):
        i = np.flatnonzero(kinds == k)
        if i.size:
            part = img[i]
            draw(rng, i.size, y[i], x[i], part)
            img[i] = part
    return _outline(img)


# ---- food ----

def _fruit(rng, m, y, x, img):
    cx, r = _col(7.5 + rng.integers(-1, 2, m)), _col(rng.uniform(3.4, 5.4, m))
    cy = 14 - r
    colour = _pick(rng, [(220, 30, 40), (90, 190, 40), (250, 140, 20), (240, 210, 40),
                         (120, 40, 150), (240, 100, 140)], m)
    body = _ellipse(y, x, cy, cx, r, r * _col(rng.uniform(0.85, 1.1, m)))
    _paint(img, body, colour)
    _paint(img, body & ((x - cx) + (y - cy) > r * 0.55), _mix(colour, 1.35))
    _paint(img, _ellipse(y, x, cy - r * 0.45, cx - r * 0.45, 0.8, 0.8), _mix(colour, 0.35))
    stem = (x == np.floor(cx)) & (y >= np.floor(cy - r) - 2) & (y <= np.floor(cy - r))
    _paint(img, stem, np.tile([[110, 70, 30]], (m, 1)))
    leaf = (y == np.floor(cy - r) - 1) & (x >= np.floor(cx) + 1) & (x <= np.floor(cx) + 2)
    _paint(img, leaf & _col(rng.random(m) < 0.7), _pick(rng, [(50, 160, 50)], m))


def _bread(rng, m, y, x, img):
    cx, cy = _col(7.5 + rng.integers(-1, 2, m)), _col(rng.uniform(8.5, 10, m))
    tilt = _col(rng.choice([-0.7, 0.0, 0.7], m))  # loaf, or a baguette lying diagonally
    u = (x - cx) * np.cos(tilt) + (y - cy) * np.sin(tilt)
    v = -(x - cx) * np.sin(tilt) + (y - cy) * np.cos(tilt)
    long_ = np.abs(tilt) > 0
    rx, ry = np.where(long_, 7.0, _col(rng.uniform(4.5, 6.5, m))), np.where(long_, 2.3, 3.6)
    loaf = (u / rx) ** 2 + (v / ry) ** 2 <= 1
    crust = _pick(rng, [(200, 140, 60), (170, 100, 40), (220, 170, 90)], m)
    _paint(img, loaf, crust)
    _paint(img, loaf & (v > ry * 0.35), _mix(crust, 1.3))
    _paint(img, loaf & (v < 0) & ((np.round(u) + _col(rng.integers(0, 3, m))) % 3 == 0),
           _mix(crust, 0.55))


def _drink(rng, m, y, x, img):
    left, top = _col(rng.integers(2, 5, m)), _col(rng.integers(3, 6, m))
    right = left + _col(rng.integers(5, 7, m))
    glass = _pick(rng, [(200, 215, 235), (150, 100, 60), (230, 230, 230)], m, 10)
    drink = _pick(rng, [(230, 160, 30), (90, 50, 30), (250, 130, 20), (200, 30, 60),
                        (120, 200, 60)], m)
    cup = _box(y, x, top, 13, left, right)
    handle = _box(y, x, top + 2, top + 5, right + 1, right + 2) & ~_box(
        y, x, top + 3, top + 4, right + 1, right + 1)
    _paint(img, cup | handle, glass)
    _paint(img, _box(y, x, top + 1, 12, left + 1, right - 1), drink)
    foam = (y == top) & (x >= left) & (x <= right) | (y == top - 1) & ((x + left) % 3 == 0) & (
        x > left) & (x < right)
    _paint(img, foam & _col(rng.random(m) < 0.5), np.full((m, 3), 245))


def _meat(rng, m, y, x, img):
    cx, cy = _col(rng.uniform(5.5, 7.5, m)), _col(rng.uniform(5.5, 7.5, m))
    u, v = (x - cx + y - cy) / 1.414, (x - cx - y + cy) / 1.414  # along and across the bone
    meat = (u / 4.3) ** 2 + (v / 3.3) ** 2 <= 1
    bone = (np.abs(v) <= 0.75) & (u > 2) & (u < 7.5)
    knob = ((u - 7.3) ** 2 + (np.abs(v) - 0.9) ** 2 <= 1.0)
    colour = _pick(rng, [(170, 80, 40), (190, 60, 50), (140, 70, 30)], m)
    _paint(img, bone | knob, np.full((m, 3), 240))
    _paint(img, meat, colour)
    _paint(img, meat & (u + v < -2), _mix(colour, 0.6))


def _cheese_or_egg(rng, m, y, x, img):
    egg = _col(rng.random(m) < 0.4)
    cx, cy = _col(7.5 + rng.integers(-1, 2, m)), _col(rng.uniform(8, 10, m))
    white = _ellipse(y, x, cy, cx, 4.0, 5.5) & ((x + y) % 5 != 0) | _ellipse(y, x, cy, cx, 3.4, 4.8)
    _paint(img, egg & white, np.full((m, 3), 248))
    _paint(img, egg & _ellipse(y, x, cy - 0.5, cx + 0.5, 1.7, 1.7), _pick(rng, [(250, 190, 20)], m))
    top = _col(rng.integers(4, 7, m))
    wedge = ~egg & (y >= top) & (y <= 12) & (x >= 2) & (x <= 2 + (y - top) * 1.6 + 2)
    cheese = _pick(rng, [(250, 210, 60), (245, 180, 40), (240, 230, 150)], m)
    _paint(img, wedge, cheese)
    holes = (x + 2 * y + _col(rng.integers(0, 7, m))) % 7 == 0
    _paint(img, wedge & holes & (y > top + 1) & (y < 12), _mix(cheese, 1.3))
    _paint(img, wedge & (y == 12), _mix(cheese, 1.5))


def _food(rng, m):
    img = _blank(m)
    y, x = _grid(rng, m, shift=0, lift=(0, 1))
    return _outline(_by_kind(rng, img, y, x, (_fruit, _bread, _drink, _meat, _cheese_or_egg)))


# ---- spell: glowing effects, drawn without an outline ----

def _glow(img, distance, colour, core=0.6, body=1.4, halo=2.4):
    """Paint a glowing shape from a per-pixel distance: white core, colour, pale halo."""
    _paint(img, distance < halo, _mix(colour, 0.35))
    _paint(img, distance < body, colour)
    _paint(img, distance < core, _mix(colour, 0.25))


def _orb(rng, m, y, x, img, colour):
    cx, cy, r = _col(rng.uniform(6, 9, m)), _col(rng.uniform(6, 9, m)), _col(rng.uniform(2, 4.5, m))
    d = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    _glow(img, d, colour, core=r * 0.45, body=r, halo=r + 1.6)
    _sparkle(rng, m, y, x, img, colour, count=3)


def _sparkle(rng, m, y, x, img, colour, count=6):
    """`count` four-pointed stars at random places, each with a random arm length."""
    for _ in range(count):
        sy, sx = _col(rng.integers(1, 15, m)), _col(rng.integers(1, 15, m))
        arm = _col(rng.integers(1, 3, m))
        dy, dx = np.abs(y - sy), np.abs(x - sx)
        star = ((dy == 0) & (dx <= arm)) | ((dx == 0) & (dy <= arm))
        _paint(img, star & _col(rng.random(m) < 0.8), colour)
        _paint(img, (dy == 0) & (dx == 0), _mix(colour, 0.2))


def _flame(rng, m, y, x, img, colour):
    cx, height = _col(rng.uniform(6.5, 8.5, m)), _col(rng.uniform(9, 13, m))
    wide = _col(rng.uniform(3.5, 5.5, m))
    t = (14 - y) / height  # 0 at the base, 1 at the tip
    half = wide * np.sqrt(np.clip(1 - t, 0, 1)) * np.sqrt(np.clip(t * 3, 0, 1))
    half = half + rng.normal(0, 0.4, (m, SIZE, 1))  # flicker, row by row
    d = np.abs(x - cx) / np.maximum(half, 1e-3)
    inside = (t >= 0) & (t <= 1)
    hot = np.tile(np.array([[255, 240, 120]]), (m, 1))
    _paint(img, inside & (d < 1.0), colour)
    _paint(img, inside & (d < 0.55) & (t < 0.75), _mix(colour, 0.45))
    _paint(img, inside & (d < 0.3) & (t < 0.5), _mix(hot, 0.6))


def _ray(rng, m, y, x, img, colour):
    angle = _col(rng.uniform(0, np.pi, m))
    cx, cy = _col(rng.uniform(6, 9, m)), _col(rng.uniform(6, 9, m))
    along = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    zigzag = _col(rng.random(m) < 0.5) * (np.abs((along % 4) - 2) - 1) * 1.5  # lightning
    across = np.abs(-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle) - zigzag)
    _glow(img, np.where(np.abs(along) < 7.5, across, 99), colour, core=0.5, body=1.1, halo=2.0)
    _sparkle(rng, m, y, x, img, colour, count=2)


def _ring(rng, m, y, x, img, colour):
    cx, cy, r = _col(rng.uniform(7, 8, m)), _col(rng.uniform(7, 8, m)), _col(rng.uniform(3, 5.5, m))
    d = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    runes = np.sin(np.arctan2(y - cy, x - cx) * _col(rng.integers(3, 7, m))) > -0.3
    _glow(img, np.where(runes | (rng.random((m, 1, 1)) < 0.5), np.abs(d - r), 99), colour,
          core=0.35, body=0.8, halo=1.6)
    _paint(img, (d < 1.2) & _col(rng.random(m) < 0.5), _mix(colour, 0.5))


def _spell(rng, m):
    img = _blank(m)
    y, x = _grid(rng, m, shift=0, lift=(0, 1))
    colour = _pick(rng, VIVID, m, 15)
    kinds = (_orb, _sparkle, _flame, _ray, _ring)
    return _by_kind(rng, img, y, x, kinds, colour)


# ---- side-facing: a humanoid in profile, walking; drawn facing right, half mirrored ----

def _side_facing(rng, m):
    img = _blank(m)
    y, x = _grid(rng, m, flip=rng.random(m) < 0.5)
    skin, hair, shirt = _pick(rng, SKIN, m), _pick(rng, HAIR, m), _pick(rng, CLOTH, m)
    pants, extra = _pick(rng, CLOTH, m), _pick(rng, CLOTH + [(120, 80, 40)], m)
    stride = _col(rng.integers(0, 3, m))
    swing = _col(rng.integers(-1, 2, m))
    carry = _col(rng.integers(0, 3, m))  # 0 nothing, 1 backpack, 2 cape
    _paint(img, (carry == 2) & (y >= 7) & (y <= 12) & (x >= 5) & (x <= 6 - (y - 7) * 0.3), extra)
    off = np.floor(stride * (np.clip(y, 11, 13) - 11) / 2 + 0.5)  # how far each leg has swung
    front, back = (x == 8 + off) & (y >= 11) & (y <= 13), (x == 7 - off) & (y >= 11) & (y <= 13)
    _paint(img, back, _mix(pants, 1.3))
    _paint(img, front, pants)
    boots = (y == 14) & (((x >= 8 + off) & (x <= 9 + off)) | ((x >= 7 - off) & (x <= 8 - off)))
    _paint(img, boots, _mix(pants, 1.8))
    _paint(img, _box(y, x, 7, 10, 6, 9), shirt)
    _paint(img, (carry == 1) & _box(y, x, 7, 10, 4, 5), extra)
    _paint(img, _box(y, x, 7, 9, 8, 8), _mix(shirt, 1.35))  # the near arm
    _paint(img, (y == 10) & (x == 8 + swing), skin)
    _paint(img, _box(y, x, 2, 6, 6, 10) | ((y == 4) & (x == 11)), skin)
    _paint(img, (y == 4) & (x == 9), np.full((m, 3), 20))  # the one eye
    style = _col(rng.integers(0, 3, m))
    cap = _box(y, x, 1, 2, 6, 10) | ((y == 2) & (x >= 11) & (x <= 12))
    hair_mask = _box(y, x, 1, 2, 6, 10) | _box(y, x, 3, 5, 5, 6) | ((style == 1) & _box(
        y, x, 3, 7, 4, 5))
    _paint(img, (style != 2) & hair_mask, hair)
    _paint(img, (style == 2) & cap, extra)
    return _outline(img)


# ---- the public entry point ----

DRAW = (_hero, _non_hero, _food, _spell, _side_facing)  # in CLASSES order


def _by_kind(rng, img, y, x, kinds, *extra):
    """Split a batch at random among drawing functions `kinds(rng, m, y, x, img, *extra)`."""
    choice = rng.integers(0, len(kinds), len(img))
    for k, draw in enumerate(kinds):
        i = np.flatnonzero(choice == k)
        if i.size:
            part = img[i]
            draw(rng, i.size, y[i], x[i], part, *(e[i] for e in extra))
            img[i] = part
    return img


def _draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    images = np.empty((len(labels), SIZE, SIZE, 3), np.uint8)
    for k, draw in enumerate(DRAW):
        i = np.flatnonzero(labels == k)
        if i.size:
            images[i] = draw(rng, i.size)
    return images


def make_sprites(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n` distinct sprites, balanced over CLASSES, deterministically for `seed`.

    Returns uint8 images (n, 16, 16, 3) on white, in the course's `.npy` layout, and int64 class
    indices (n,) into CLASSES. Duplicates (rare) are redrawn until all images differ.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    if n > MAX_SPRITES:
        raise MinidiffError(f"n={n} is more than the {MAX_SPRITES} built-in sprites minidiff "
                            f"draws (the course's set has 89,400); pass a smaller n (--n-images)")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = _draw(labels, rng)
    for _ in range(100):
        again = _duplicates(images)
        if again.size == 0:
            return images, labels
        images[again] = _draw(labels[again], rng)
    raise RuntimeError(f"could not draw {n} distinct sprites")  # more than the kinds can vary


def _duplicates(images: np.ndarray) -> np.ndarray:
    """Indices of images equal to an earlier one."""
    rows = np.ascontiguousarray(images.reshape(len(images), SIZE * SIZE * 3))
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return np.setdiff1d(np.arange(len(images)), first)
