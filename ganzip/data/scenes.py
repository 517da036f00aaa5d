"""Rendering the built-in tasks' scenes: vectorised over the batch, looping only over the <= 6 objects.

`ganzip.data.procedural` draws each image's scene parameters from its own
seeded generator and hands the stacked batch to `_render`, which draws it in
each requested style (photo, label map, edges, ...).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

_K = 6  # objects per scene, at most

_LABEL_COLOURS = torch.tensor(
    [[0.15, 0.35, 0.85], [0.10, 0.60, 0.20], [0.90, 0.15, 0.15], [0.95, 0.60, 0.10], [0.60, 0.20, 0.80]]
)
_SKY, _GROUND = 0, 1
_BALL, _BOX, _TENT = 0, 1, 2


def _col(*rgb: float) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)


def _upsample(noise: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """[B,h,w] noise -> [B,S,S], resolution independent (the same scene at every size)."""
    return F.interpolate(noise[:, None], size=(size, size), mode=mode, align_corners=False, antialias=mode != "bicubic")[:, 0]


def _per(x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B,1,1] for broadcasting against [B,S,S] fields."""
    return x.view(-1, 1, 1)


def _pick(table: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
    """Per-pixel lookup of per-object values: table [B,K,C], inst [B,S,S] in 0..K-1 -> [B,C,S,S]."""
    B, K, C = table.shape
    idx = inst.reshape(B, 1, -1).expand(B, C, -1)
    return torch.gather(table.transpose(1, 2), 2, idx).view(B, C, *inst.shape[1:])


class _Scene:
    """The geometry of a batch of scenes, shared by every style.

    Objects are composited far to near into per-pixel buffers (which object,
    its kind, and the pixel's coordinates u, v in the object's own frame, in
    [-1, 1]); colouring then runs once per pixel instead of once per object.
    """

    def __init__(self, P: dict[str, torch.Tensor], size: int) -> None:
        self.P, self.size = P, size
        B = P["horizon"].shape[0]
        c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        self.yy, self.xx = (g[None] for g in torch.meshgrid(c, c, indexing="ij"))  # [1,S,S]
        xx, yy = self.xx, self.yy
        wave = P["wave"]
        hz = _per(P["horizon"]) + _per(wave[:, 0]) * torch.sin(2 * math.pi * (_per(wave[:, 1]) * xx + _per(wave[:, 2])))
        self.sky = yy < hz
        self.depth = ((yy - hz) / (1 - hz)).clamp(0, 1)
        self.inst = torch.zeros(B, size, size, dtype=torch.long)  # 0 = no object, k+1 = object k
        self.u = torch.zeros(B, size, size)
        self.v = torch.zeros(B, size, size)
        for k in range(_K):
            cx, cy, rx, ry = (_per(P[n][:, k]) for n in ("cx", "cy", "rx", "ry"))
            cos, sin = _per(torch.cos(P["theta"][:, k])), _per(torch.sin(P["theta"][:, k]))
            dx, dy = xx - cx, yy - cy
            u = (cos * dx + sin * dy) / rx
            v = (-sin * dx + cos * dy) / ry
            kind = _per(P["kind"][:, k])
            inside = torch.where(
                kind == _BALL, u * u + v * v <= 1,
                (v.abs() <= 1) & (u.abs() <= torch.where(kind == _BOX, 1.0, (v + 1) / 2)),
            ) & _per(P["valid"][:, k])
            self.inst = torch.where(inside, k + 1, self.inst)
            self.u = torch.where(inside, u, self.u)
            self.v = torch.where(inside, v, self.v)
        self.obj = self.inst > 0
        self.slot = (self.inst - 1).clamp(min=0)  # object index where obj, 0 elsewhere
        self.kind = torch.where(self.obj, _pick(P["kind"][:, :, None], self.slot)[:, 0], -1)
        self.cls = torch.where(self.obj, self.kind + 2, torch.where(self.sky, _SKY, _GROUND))

    # -- styles -------------------------------------------------------------

    def render(self, style: str) -> torch.Tensor:
        if style == "labels":
            img = _LABEL_COLOURS[self.cls].permute(0, 3, 1, 2)
        elif style == "edges":
            img = self._edges()
        else:
            night = style == "night"
            img = torch.where(self.sky[:, None], self._sky(night), self._ground(night))
            img = torch.where(self.obj[:, None], self._objects(style), img)
            img = img * _per(self.P["brightness"])[:, None]
        return (img.clamp(0, 1) * 255).round().to(torch.uint8)

    def _edges(self) -> torch.Tensor:
        """Black lines where the region (object instance, sky or ground) changes; white elsewhere."""
        key = torch.where(self.obj, self.inst + 1, self.cls)
        edge = torch.zeros_like(key, dtype=torch.bool)
        edge[:, :, :-1] |= key[:, :, :-1] != key[:, :, 1:]
        edge[:, :-1, :] |= key[:, :-1, :] != key[:, 1:, :]
        if self.size >= 160:  # keep lines about the same relative width at large sizes
            edge = F.max_pool2d(edge[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
        return (1.0 - edge.float())[:, None].expand(-1, 3, -1, -1)

    def _sky(self, night: bool) -> torch.Tensor:
        P, xx, yy, size = self.P, self.xx, self.yy, self.size
        t = (yy / _per(P["horizon"])).clamp(0, 1)[:, None]
        sx, sy = _per(P["sun"][:, 0]), _per(P["sun"][:, 1])
        if night:
            img = _col(0.02, 0.02, 0.07) * (1 - t) + _col(0.07, 0.09, 0.22) * t
            stars = _upsample((P["stars"] > 2.4).float(), size, "bilinear").clamp(0, 1)
            img = img + 0.9 * stars[:, None] * _col(1.0, 1.0, 0.9)
            moon = ((xx - sx) ** 2 + (yy - sy) ** 2 < 0.045**2) & ((xx - sx - 0.02) ** 2 + (yy - sy + 0.01) ** 2 >= 0.04**2)
            return torch.where(moon[:, None], _col(0.95, 0.93, 0.75), img)
        img = _col(0.22, 0.42, 0.85) * (1 - t) + _col(0.75, 0.85, 0.95) * t
        cloud = torch.sigmoid((_upsample(P["clouds"], size) - 0.7) * 5)[:, None] * 0.85
        img = img * (1 - cloud) + cloud
        d2 = (xx - sx) ** 2 + (yy - sy) ** 2
        img = img + 0.5 * torch.exp(-d2 / 0.06**2)[:, None] * _col(1.0, 0.9, 0.6)
        return torch.where((d2 < 0.035**2)[:, None], _col(1.0, 0.98, 0.85), img)

    def _ground(self, night: bool) -> torch.Tensor:
        """Grass, darker towards the horizon; by day each object casts a soft shadow."""
        P, xx, yy, size = self.P, self.xx, self.yy, self.size
        texture = (0.07 * _upsample(P["grass"], size) + 0.035 * _upsample(P["grain"], size, "bilinear"))[:, None]
        depth = self.depth[:, None]
        if night:
            return _col(0.04, 0.09, 0.08) * (0.6 + 0.6 * depth) + texture * _col(0.03, 0.06, 0.045)
        ground = _col(0.30, 0.58, 0.22) * (0.7 + 0.4 * depth) + texture * _col(0.5, 0.8, 0.3)
        lx = _per(P["light"][:, 0])
        shade = torch.ones_like(self.u)
        for k in range(_K):
            rx, ry = _per(P["rx"][:, k]), _per(P["ry"][:, k])
            q = ((xx - _per(P["cx"][:, k]) + lx * 0.8 * rx) / (1.3 * rx)) ** 2 + (
                (yy - _per(P["cy"][:, k]) - ry) / (0.22 * ry + 0.012)
            ) ** 2
            shade = shade * (1 - 0.45 * _per(P["valid"][:, k].float()) * (1 - q).clamp(0, 1))
        return ground * shade[:, None]

    def _objects(self, style: str) -> torch.Tensor:
        """Colour of the front object at every pixel (only used where there is one): [B,3,S,S]."""
        P = self.P
        u, v, kind = self.u[:, None], self.v[:, None], self.kind[:, None]
        light = F.normalize(P["light"], dim=1)
        half = F.normalize(P["light"] + torch.tensor([0.0, 0.0, 1.0]), dim=1)
        lx, ly, lz = (light[:, i].view(-1, 1, 1, 1) for i in range(3))
        hx, hy, hz = (half[:, i].view(-1, 1, 1, 1) for i in range(3))
        tint = _pick(P["tint"], self.slot)
        side = u * lx.sign()  # > 0 on the side facing away from the light

        # Shading per shape: a lit glossy sphere, a box face with a gentle gradient, a two-faced tent.
        nz = (1 - u * u - v * v).clamp(min=0).sqrt()
        diffuse = (u * lx + v * ly + nz * lz).clamp(min=0)
        ball = kind == _BALL
        shade = torch.where(ball, 0.22 + 0.78 * diffuse, torch.where(kind == _BOX, 0.85 - 0.15 * side, 1 - 0.32 * (side > 0).float()))
        highlight = torch.where(ball, (u * hx + v * hy + nz * hz).clamp(min=0) ** 24, 0.0)

        if style == "solid":
            return _col(0.55, 0.34, 0.18) * tint * shade + 0.35 * highlight
        if style == "striped":
            stripe = _pick(P["stripe"], self.slot)
            s = torch.sin(math.pi * stripe[:, :1] * (u + 0.18 * torch.sin(3 * v + stripe[:, 1:])))
            w = torch.sigmoid(8 * s)
            return (_col(0.08, 0.07, 0.07) * (1 - w) + _col(0.93, 0.91, 0.86) * w) * shade + 0.35 * highlight
        if style == "day":
            # Balls: glossy red. Boxes: staggered brick courses in the box's own
            # (rotated) frame. Tents: diagonal yellow/orange stripes.
            rows = (v + 1) * 2.5
            row = rows.floor()
            cols = (u + 1) * 1.5 + 0.5 * (row % 2)
            mortar = ((rows - row) < 0.12) | ((cols - cols.floor()) < 0.07)
            brick = torch.where(mortar, _col(0.85, 0.82, 0.75), _col(0.72, 0.33, 0.18) * tint)
            tent = torch.where(torch.sin(4 * math.pi * (u + v)) > 0, _col(0.97, 0.82, 0.2), _col(0.92, 0.45, 0.1)) * tint
            albedo = torch.where(ball, _col(0.85, 0.18, 0.14) * tint, torch.where(kind == _BOX, brick, tent))
            return albedo * shade + 0.9 * highlight
        # night: dark bodies, moon rim light on balls, lit windows on boxes, glowing tents.
        ball_c = _col(0.06, 0.05, 0.09) + 0.35 * (1 - nz) ** 3 * _col(0.6, 0.65, 0.9)
        wu, wv = (u + 1) * 1.5, (v + 1) * 2.0  # 3 columns x 4 rows of windows
        pane = ((wu - wu.floor() - 0.5).abs() < 0.25) & ((wv - wv.floor() - 0.5).abs() < 0.22)
        window = (wv.floor().clamp(0, 3) * 3 + wu.floor().clamp(0, 2)).long()[:, 0]
        lit = torch.gather(P["windows"].flatten(1), 1, (self.slot * 12 + window).flatten(1)).view_as(u) > 0
        box_c = torch.where(pane & lit, _col(1.0, 0.85, 0.4), _col(0.10, 0.08, 0.08) * tint * shade)
        glow = (1 - u.abs() / ((v + 1) / 2).clamp(min=1e-3)).clamp(0, 1)
        tent_c = _col(0.35, 0.16, 0.05) + 0.55 * glow * (v + 1) / 2 * _col(1.0, 0.6, 0.2)
        return torch.where(ball, ball_c, torch.where(kind == _BOX, box_c, tent_c))


def _render(P: dict[str, torch.Tensor], size: int, styles: Iterable[str]) -> dict[str, torch.Tensor]:
    """Render the scenes in `P` in each style: {style: uint8 [B,3,S,S]}."""
    scene = _Scene(P, size)
    return {style: scene.render(style) for style in styles}
