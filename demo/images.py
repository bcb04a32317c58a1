"""Draws the catalog's SVG pictures into ``static/img`` (run: ``python -m demo.images``).

Flat illustrations made from a few shapes, so the demo needs no downloads.
"""

from __future__ import annotations

import os

# slug: (background, main colour, accent, shape)
PICTURES = {
    "avocados": ("#e8f5e1", "#3f7d20", "#c9a15b", "fruit"),
    "strawberries": ("#fde8ea", "#e63946", "#2d6a4f", "berry"),
    "oranges": ("#fff1de", "#f48c06", "#2d6a4f", "fruit"),
    "sourdough": ("#f7eddc", "#c68b59", "#8a5a2b", "loaf"),
    "croissants": ("#fff4d6", "#e0a458", "#b5651d", "crescent"),
    "milk": ("#e7f1fb", "#ffffff", "#3a86ff", "bottle"),
    "cheddar": ("#fff8d6", "#f4c430", "#d49a00", "wedge"),
    "coffee": ("#efe6df", "#4b2e2b", "#c8a27a", "cup"),
    "lemonade": ("#fbfbd9", "#ffe74c", "#6ab04c", "bottle"),
}
OFFER_PICTURES = {
    "breakfast-deal": ("croissants", "#ff6b35", "25% OFF"),
    "berry-weekend": ("strawberries", "#e63946", "30% OFF"),
    "cold-brew-summer": ("coffee", "#1d3557", "20% OFF"),
}


def shape(kind: str, main: str, accent: str) -> str:
    if kind == "fruit":
        return (
            f'<ellipse cx="200" cy="160" rx="88" ry="80" fill="{main}"/>'
            f'<ellipse cx="200" cy="170" rx="34" ry="32" fill="{accent}" opacity=".85"/>'
            '<path d="M200 82 q30 -40 60 -20 q-30 20 -60 20z" fill="#52b788"/>'
        )
    if kind == "berry":
        dots = "".join(
            f'<circle cx="{x}" cy="{y}" r="4" fill="#ffd6a5"/>'
            for x, y in [(170, 150), (200, 140), (230, 150), (185, 180), (215, 180), (200, 210)]
        )
        return (
            f'<path d="M120 120 Q200 90 280 120 Q270 220 200 260 Q130 220 120 120z" fill="{main}"/>'
            f'<path d="M150 112 l25 -30 l25 22 l25 -22 l25 30z" fill="{accent}"/>{dots}'
        )
    if kind == "loaf":
        return (
            f'<path d="M100 220 Q100 100 200 100 Q300 100 300 220z" fill="{main}"/>'
            f'<rect x="100" y="210" width="200" height="24" rx="10" fill="{accent}"/>'
            f'<path d="M150 140 l20 40 M195 130 l20 45 M240 140 l20 40" stroke="{accent}" '
            'stroke-width="8" stroke-linecap="round"/>'
        )
    if kind == "crescent":
        return (
            f'<path d="M90 200 Q200 60 310 200 Q260 170 200 175 Q140 170 90 200z" fill="{main}"/>'
            f'<path d="M150 150 l15 35 M200 125 l0 45 M250 150 l-15 35" stroke="{accent}" '
            'stroke-width="7" stroke-linecap="round"/>'
        )
    if kind == "bottle":
        return (
            f'<rect x="165" y="60" width="70" height="30" rx="6" fill="{accent}"/>'
            f'<path d="M170 90 h60 v30 q30 20 30 60 v80 q0 12 -12 12 h-96 q-12 0 -12 -12 v-80 '
            f'q0 -40 30 -60z" fill="{main}" stroke="{accent}" stroke-width="6"/>'
            f'<rect x="150" y="190" width="100" height="40" rx="6" fill="{accent}" opacity=".8"/>'
        )
    if kind == "wedge":
        return (
            f'<path d="M100 230 L300 230 L300 150 L120 110z" fill="{main}" '
            f'stroke="{accent}" stroke-width="6"/>'
            f'<circle cx="180" cy="180" r="14" fill="{accent}"/>'
            f'<circle cx="250" cy="200" r="10" fill="{accent}"/>'
        )
    # cup
    return (
        f'<path d="M135 110 h130 l-15 150 q-2 14 -16 14 h-68 q-14 0 -16 -14z" fill="{accent}"/>'
        f'<rect x="125" y="95" width="150" height="22" rx="8" fill="{main}"/>'
        f'<rect x="145" y="160" width="110" height="40" rx="6" fill="{main}" opacity=".85"/>'
    )


def product_svg(slug: str) -> str:
    background, main, accent, kind = PICTURES[slug]
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 300" '
        f'role="img" aria-label="{slug}">'
        f'<rect width="400" height="300" fill="{background}"/>'
        '<ellipse cx="200" cy="272" rx="120" ry="12" fill="#000" opacity=".07"/>'
        f"{shape(kind, main, accent)}</svg>\n"
    )


def offer_svg(slug: str) -> str:
    product, colour, badge = OFFER_PICTURES[slug]
    background, main, accent, kind = PICTURES[product]
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 800 300" '
        f'role="img" aria-label="{slug}">'
        f'<rect width="800" height="300" fill="{background}"/>'
        f'<circle cx="700" cy="40" r="160" fill="{colour}" opacity=".12"/>'
        f'<circle cx="90" cy="290" r="110" fill="{colour}" opacity=".10"/>'
        f'<g transform="translate(360 0)">{shape(kind, main, accent)}</g>'
        f'<g transform="translate(110 150) rotate(-8)"><rect x="-90" y="-44" width="180" '
        f'height="88" rx="44" fill="{colour}"/><text x="0" y="14" text-anchor="middle" '
        'font-family="Helvetica, Arial, sans-serif" font-size="38" font-weight="700" '
        f'fill="#fff">{badge}</text></g></svg>\n'
    )


def write_all(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for slug in PICTURES:
        with open(os.path.join(folder, f"{slug}.svg"), "w") as handle:
            handle.write(product_svg(slug))
    for slug in OFFER_PICTURES:
        with open(os.path.join(folder, f"offer-{slug}.svg"), "w") as handle:
            handle.write(offer_svg(slug))


if __name__ == "__main__":
    write_all(os.path.join(os.path.dirname(os.path.dirname(__file__)), "static", "img"))
