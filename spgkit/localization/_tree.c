/* Compiled core of spgkit.localization.tree: the regions of a map's level sets at every cut, from
 * union-find passes over the pixels sorted by level. See tree.py for the definitions and the method.
 *
 * Images live on a grid padded by one pixel on every side (index (y + 1) * (W + 2) + x + 1), so that
 * neighbours need no bounds checks. Levels are stored plus one, the padding at 0: it never joins the
 * foreground, and when holes are filled it is the frame around the image. Only the Python C API is
 * used (buffers, bytearrays), so building needs no numpy headers.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t x0, x1;         /* inclusive columns */
    int32_t first, last;    /* first and last pixels in raster order, as padded indices (which grow
                               likewise): they give the rows */
    int32_t weight;         /* what the pass ranks regions by (largest, union by weight): OpenCV
                               contour area in half pixels where it counts AREAS, else pixels */
    int32_t opens;          /* a hole: the level at which it joins the outside */
    int32_t pos;            /* position in the live list */
    int32_t row;            /* output row of the region at the current cut */
} Node;

typedef struct {
    int32_t *parent; /* padded grid: the parent pixel (>= 0), or -1 - node for a root; before a pixel
                        is added, its mask (see below) */
    Node *nodes;
    int32_t num_nodes;
    int32_t *live; /* nodes that are roots, in no order */
    int32_t num_live;
} Forest;

typedef struct {
    int64_t *data; /* rows of (cut index, x0, y0, x1, y1) */
    Py_ssize_t len, cap;
} Rows;

typedef struct {
    int H, W, Wp;
    Py_ssize_t padded;
    int shift;       /* pixels are packed as y << shift | x */
    int32_t off[8];  /* neighbours: NW, N, NE, W, E, SW, S, SE */
} Grid;

/* A pass adds pixels in a fixed order, so which neighbours of a pixel are already in (its mask, bit k
 * for neighbour off[k]) is known beforehand; it is kept in the pixel's parent entry until the pixel
 * is added, which saves a memory access per pixel in passes that jump around the image. For each
 * mask: one neighbour per group of mutually 8-adjacent ones (the count in bits 0-2, then 3 bits per
 * neighbour; two added neighbours that touch were joined when the later one came, so one find per
 * group is enough, and smooth maps mostly have one group); and the contour area the pixel adds, in
 * half pixels: each of its four cells (2x2 pixels) counts half a pixel once three corners are in and
 * another half with the fourth. Any three corners of a cell are 8-connected, so that area belongs to
 * the pixel's region. */
static uint16_t groups8[256];
static uint8_t area8[256];

static void init_tables(void)
{
    static const int dy[8] = {-1, -1, -1, 0, 0, 1, 1, 1}, dx[8] = {-1, 0, 1, -1, 1, -1, 0, 1};
    /* Each group's find starts from the neighbour added last (E, then the row below, in a descending
     * pass): its entry is likely still in cache and pointing at the root. */
    static const int latest[8] = {4, 6, 7, 5, 3, 1, 2, 0};
    /* The other three corners of each cell around the pixel: NW N W, N NE E, W SW S, E S SE. */
    static const int cells[4][3] = {{0, 1, 3}, {1, 2, 4}, {3, 5, 6}, {4, 6, 7}};
    for (int mask = 0; mask < 256; mask++) {
        int group[8], count = 0;
        for (int k = 0; k < 8; k++)
            group[k] = -1;
        groups8[mask] = 0;
        for (int i = 0; i < 8; i++) {
            int k = latest[i];
            if (!(mask >> k & 1) || group[k] >= 0)
                continue;
            int stack[8], top = 0;
            group[k] = count;
            stack[top++] = k;
            while (top) {
                int a = stack[--top];
                for (int b = 0; b < 8; b++)
                    if ((mask >> b & 1) && group[b] < 0 && abs(dy[a] - dy[b]) <= 1 && abs(dx[a] - dx[b]) <= 1) {
                        group[b] = count;
                        stack[top++] = b;
                    }
            }
            groups8[mask] |= (uint16_t)(k << (3 + 3 * count));
            count++;
        }
        groups8[mask] |= (uint16_t)count;
        area8[mask] = 0;
        for (int c = 0; c < 4; c++) {
            int in = 1 + (mask >> cells[c][0] & 1) + (mask >> cells[c][1] & 1) + (mask >> cells[c][2] & 1);
            area8[mask] += in >= 3;
        }
    }
}

/* 1 if a > b, for levels (small non-negative ints): the sign of b - a, branch-free so that the mask
 * loops vectorise. */
#define ABOVE(a, b) ((uint32_t)((b) - (a)) >> 31)

/* Masks of a pass that adds pixels by descending level, raster order backwards within a level:
 * neighbours of a higher level, or of the same level and later in raster order, come first. */
static void masks_descending(const Grid *g, const int32_t *restrict level, int32_t *restrict mask)
{
    for (int y = 1; y <= g->H; y++) {
        const int32_t *c = level + (Py_ssize_t)y * g->Wp, *up = c - g->Wp, *dn = c + g->Wp;
        int32_t *m = mask + (Py_ssize_t)y * g->Wp;
        for (Py_ssize_t x = 1; x <= g->W; x++) { /* not int: -fwrapv (Python's flags) stops vectorising */
            int32_t v = c[x], w = v - 1; /* a >= v is a > v - 1 */
            m[x] = (int32_t)(ABOVE(up[x - 1], v) | ABOVE(up[x], v) << 1 | ABOVE(up[x + 1], v) << 2 |
                             ABOVE(c[x - 1], v) << 3 | ABOVE(c[x + 1], w) << 4 | ABOVE(dn[x - 1], w) << 5 |
                             ABOVE(dn[x], w) << 6 | ABOVE(dn[x + 1], w) << 7);
        }
    }
}

/* Masks of the hole pass: 4-neighbours N, W, E, S (bits 1, 3, 4, 6 as in off[]) that are in a
 * depression (fill > level) and come first by ascending level, raster order within a level. */
static void masks_holes(const Grid *g, const int32_t *restrict level, const int32_t *restrict fill,
                        int32_t *restrict mask)
{
    const Py_ssize_t Wp = g->Wp;
    for (int y = 1; y <= g->H; y++) {
        const int32_t *c = level + (Py_ssize_t)y * Wp, *f = fill + (Py_ssize_t)y * Wp;
        int32_t *m = mask + (Py_ssize_t)y * Wp;
        for (Py_ssize_t x = 1; x <= g->W; x++) {
            int32_t v = c[x], w = v + 1; /* a <= v is v + 1 > a */
            m[x] = (int32_t)((ABOVE(w, c[x - Wp]) & ABOVE(f[x - Wp], c[x - Wp])) << 1 |
                             (ABOVE(w, c[x - 1]) & ABOVE(f[x - 1], c[x - 1])) << 3 |
                             (ABOVE(v, c[x + 1]) & ABOVE(f[x + 1], c[x + 1])) << 4 |
                             (ABOVE(v, c[x + Wp]) & ABOVE(f[x + Wp], c[x + Wp])) << 6);
        }
    }
}

/* The filled image: the lowest level at which each pixel is outside, i.e. joined to the frame (the
 * padding, at level 0) by a 4-path of pixels at or below that level. It is the image with the holes
 * of all its upper level sets filled, a grayscale reconstruction by erosion from the frame, computed
 * as in Vincent's hybrid algorithm: a raster and an anti-raster scan give upper bounds, then the
 * pixels that can still lower a neighbour seed a propagation. That goes by increasing value with a
 * bucket queue (values are levels), so that each pixel is lowered at most once: in noisy maps a
 * first-in first-out queue lowers most of them three times over. entry, link: room for 2 entries a
 * pixel (seeds, then lowered pixels; stale entries are skipped). */
/* The scans of fill_holes, one pixel at a time: from above and the left (down), and from below and
 * the right (up), which tells whether the pixel can still lower a neighbour below or to its right. */
static inline void step_down(const int32_t *level, int32_t *fill, Py_ssize_t i, Py_ssize_t Wp)
{
    int32_t m = fill[i - Wp] < fill[i - 1] ? fill[i - Wp] : fill[i - 1];
    fill[i] = level[i] > m ? level[i] : m;
}

static inline int step_up(const int32_t *level, int32_t *fill, Py_ssize_t i, Py_ssize_t Wp)
{
    int32_t m = fill[i + Wp] < fill[i + 1] ? fill[i + Wp] : fill[i + 1];
    m = m < fill[i] ? m : fill[i];
    int32_t f = level[i] > m ? level[i] : m;
    fill[i] = f;
    return ((fill[i + 1] > f) & (fill[i + 1] > level[i + 1])) | ((fill[i + Wp] > f) & (fill[i + Wp] > level[i + Wp]));
}

/* Each scan takes rows by fours, each row a pixel behind the one it depends on: one row alone is a
 * chain of dependent minima, four are independent chains that the processor runs side by side. */
static void scan_down(const Grid *g, const int32_t *level, int32_t *fill)
{
    const Py_ssize_t Wp = g->Wp, W = g->W;
    int y = 1;
    for (; y + 3 <= g->H; y += 4) {
        Py_ssize_t row = (Py_ssize_t)y * Wp;
        for (Py_ssize_t t = 1; t <= W + 3; t++) {
            if (t >= 4 && t <= W) {
                step_down(level, fill, row + t, Wp);
                step_down(level, fill, row + Wp + t - 1, Wp);
                step_down(level, fill, row + 2 * Wp + t - 2, Wp);
                step_down(level, fill, row + 3 * Wp + t - 3, Wp);
            } else {
                for (int k = 0; k < 4; k++)
                    if (t - k >= 1 && t - k <= W)
                        step_down(level, fill, row + k * Wp + t - k, Wp);
            }
        }
    }
    for (; y <= g->H; y++)
        for (Py_ssize_t x = 1; x <= W; x++)
            step_down(level, fill, (Py_ssize_t)y * Wp + x, Wp);
}

/* Returns the number of seeds, the pixels that can still lower a neighbour, listed in seeds. */
static int32_t scan_up(const Grid *g, const int32_t *level, int32_t *fill, int32_t *seeds)
{
    const Py_ssize_t Wp = g->Wp, W = g->W;
    int32_t e = 0;
    int y = g->H;
    for (; y - 3 >= 1; y -= 4) {
        Py_ssize_t row = (Py_ssize_t)y * Wp;
        for (Py_ssize_t t = W; t >= -2; t--) {
            if (t >= 1 && t <= W - 3) {
                for (int k = 0; k < 4; k++) { /* unrolled by the compiler */
                    Py_ssize_t i = row - k * Wp + t + k;
                    seeds[e] = (int32_t)i;
                    e += step_up(level, fill, i, Wp);
                }
            } else {
                for (int k = 0; k < 4; k++)
                    if (t + k >= 1 && t + k <= W) {
                        Py_ssize_t i = row - k * Wp + t + k;
                        seeds[e] = (int32_t)i;
                        e += step_up(level, fill, i, Wp);
                    }
            }
        }
    }
    for (; y >= 1; y--)
        for (Py_ssize_t x = W; x >= 1; x--) {
            Py_ssize_t i = (Py_ssize_t)y * Wp + x;
            seeds[e] = (int32_t)i;
            e += step_up(level, fill, i, Wp);
        }
    return e;
}

static void fill_holes(const Grid *g, const int32_t *level, int32_t *fill, int32_t *entry, int32_t *link)
{
    static const int side[4] = {1, 3, 4, 6}; /* N, W, E, S in off[] */
    scan_down(g, level, fill);
    int32_t head[258], e = scan_up(g, level, fill, entry);
    for (int v = 0; v < 258; v++)
        head[v] = -1;
    for (int32_t k = 0; k < e; k++) { /* into their buckets, apart: the scan stays free of branches */
        link[k] = head[fill[entry[k]]];
        head[fill[entry[k]]] = k;
    }
    for (int v = 0; v < 258; v++)
        while (head[v] >= 0) {
            int32_t p = entry[head[v]];
            head[v] = link[head[v]];
            if (fill[p] != v)
                continue; /* lowered since: its newer entry came first */
            for (int k = 0; k < 4; k++) {
                int32_t q = p + g->off[side[k]], lq = level[q];
                if (fill[q] > v && fill[q] > lq) {
                    int32_t to = v > lq ? v : lq; /* at least v: the queue only moves up */
                    fill[q] = to;
                    entry[e] = q;
                    link[e] = head[to];
                    head[to] = e++;
                }
            }
        }
}

/* One call's memory, all released in one place (call_end) wherever the call stops: its arguments'
 * buffers, its scratch arena (one block, which the call's arrays take in turn) and its output rows.
 * Nothing outlives a call, so calls share no state. */
typedef struct {
    Py_buffer map, cuts, gt; /* the map, its cuts or thresholds; gt.obj is NULL without boxes */
    char *arena;
    size_t used;
    Rows rows, undecided;
} Call;

static size_t rounded(size_t size) { return (size + 63) & ~(size_t)63; }

static int arena_open(Call *c, size_t total)
{
    c->arena = malloc(total);
    c->used = 0;
    if (!c->arena) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void *scratch(Call *c, size_t size)
{
    void *p = c->arena + c->used;
    c->used += rounded(size);
    return p;
}

/* Releases what call c holds and returns out (NULL, with the error set, where the call failed). */
static PyObject *call_end(Call *c, PyObject *out)
{
    free(c->arena);
    free(c->rows.data);
    free(c->undecided.data);
    PyBuffer_Release(&c->map);
    PyBuffer_Release(&c->cuts);
    PyBuffer_Release(&c->gt); /* does nothing where gt.obj is NULL */
    return out;
}

/* Zeroes the padding of a padded grid. */
static void clear_frame(const Grid *g, int32_t *a)
{
    memset(a, 0, sizeof(int32_t) * (size_t)g->Wp);
    memset(a + g->padded - g->Wp, 0, sizeof(int32_t) * (size_t)g->Wp);
    for (int y = 1; y <= g->H; y++)
        a[(Py_ssize_t)y * g->Wp] = a[(Py_ssize_t)y * g->Wp + g->Wp - 1] = 0;
}

static size_t forest_bytes(const Grid *g, Py_ssize_t max_nodes)
{
    return rounded(sizeof(int32_t) * (size_t)g->padded) + rounded(sizeof(Node) * (size_t)max_nodes) +
           rounded(sizeof(int32_t) * (size_t)max_nodes);
}

static void forest_init(Forest *f, const Grid *g, Py_ssize_t max_nodes, Call *c)
{
    f->parent = scratch(c, sizeof(int32_t) * (size_t)g->padded);
    f->nodes = scratch(c, sizeof(Node) * (size_t)max_nodes);
    f->live = scratch(c, sizeof(int32_t) * (size_t)max_nodes);
    f->num_nodes = f->num_live = 0;
}

static inline int32_t find(int32_t *parent, int32_t p)
{
    /* Path halving. */
    int32_t q;
    while ((q = parent[p]) >= 0) {
        int32_t r = parent[q];
        if (r < 0)
            return q;
        parent[p] = r;
        p = r;
    }
    return p;
}

static inline Node *node_of(Forest *f, int32_t root) { return &f->nodes[-1 - f->parent[root]]; }

static inline void live_remove(Forest *f, Node *n)
{
    int32_t last = f->live[--f->num_live];
    f->live[n->pos] = last;
    f->nodes[last].pos = n->pos;
}

static inline Node *new_root(Forest *f, int32_t p, int32_t x, int32_t weight)
{
    int32_t k = f->num_nodes++;
    Node *n = &f->nodes[k];
    n->x0 = n->x1 = x;
    n->last = p;
    n->weight = weight;
    n->first = p;
    n->opens = 0;
    n->pos = f->num_live;
    f->live[f->num_live++] = k;
    f->parent[p] = -1 - k;
    return n;
}

/* What a pass keeps up to date per pixel besides weights (constants at each call, so that every
 * pass compiles to what it needs). */
enum { BOXES = 1, FIRST = 2, AREAS = 4 };

static inline void grow(Node *n, int32_t p, int32_t x, int what)
{
    if (what & BOXES) {
        n->x0 = x < n->x0 ? x : n->x0;
        n->x1 = x > n->x1 ? x : n->x1;
        n->last = p > n->last ? p : n->last;
    }
    if (what & (BOXES | FIRST))
        n->first = p < n->first ? p : n->first;
}

/* Union by weight (size, or area, which grows alike) of two roots; returns the new root. */
static inline int32_t unite(Forest *f, int32_t a, int32_t b)
{
    Node *na = node_of(f, a), *nb = node_of(f, b);
    if (na->weight < nb->weight) {
        int32_t t = a;
        a = b;
        b = t;
        Node *tn = na;
        na = nb;
        nb = tn;
    }
    if (nb->x0 < na->x0) na->x0 = nb->x0;
    if (nb->x1 > na->x1) na->x1 = nb->x1;
    if (nb->first < na->first) na->first = nb->first;
    if (nb->last > na->last) na->last = nb->last;
    if (nb->opens < na->opens) na->opens = nb->opens;
    na->weight += nb->weight;
    live_remove(f, nb);
    f->parent[b] = a;
    return a;
}

/* Adds foreground pixel p (8-connectivity). */
static inline void add8(Forest *f, const Grid *g, int32_t p, int32_t x, int what)
{
    int32_t *parent = f->parent;
    unsigned mask = (unsigned)parent[p], groups = groups8[mask], count = groups & 7;
    int32_t weight = (what & AREAS) ? area8[mask] : 1;
    if (!count) {
        new_root(f, p, x, weight);
    } else {
        int32_t root = find(parent, p + g->off[groups >> 3 & 7]);
        for (unsigned j = 1; j < count; j++) {
            int32_t r = find(parent, p + g->off[groups >> (3 + 3 * j) & 7]);
            if (r != root)
                root = unite(f, root, r);
        }
        parent[p] = root;
        Node *n = node_of(f, root);
        grow(n, p, x, what);
        n->weight += weight;
    }
}

/* Adds depression pixel p (4-connectivity) to the holes; opens is its filled level. A hole lives
 * until its lowest filled level: pixels that touch at a cut are in one background region, so a hole
 * joins the outside all at once. */
static inline void add_hole(Forest *f, const Grid *g, int32_t p, int32_t x, int32_t opens)
{
    int32_t *parent = f->parent;
    unsigned mask = (unsigned)parent[p];
    int32_t root = -1;
    for (; mask; mask &= mask - 1) {
        int32_t r = find(parent, p + g->off[__builtin_ctz(mask)]);
        if (root < 0)
            root = r;
        else if (r != root)
            root = unite(f, root, r);
    }
    Node *n;
    if (root < 0) {
        n = new_root(f, p, x, 1);
        n->opens = opens;
    } else {
        parent[p] = root;
        n = node_of(f, root);
        grow(n, p, x, BOXES);
        n->weight++;
        n->opens = opens < n->opens ? opens : n->opens;
    }
}

static int rows_push(Rows *r, int64_t cut, int64_t x0, int64_t y0, int64_t x1, int64_t y1)
{
    if (r->len + 5 > r->cap) {
        Py_ssize_t cap = r->cap ? 2 * r->cap : 5 * 1024;
        int64_t *data = realloc(r->data, sizeof(int64_t) * (size_t)cap);
        if (!data) {
            PyErr_NoMemory();
            return -1;
        }
        r->data = data;
        r->cap = cap;
    }
    int64_t *out = r->data + r->len;
    out[0] = cut;
    out[1] = x0;
    out[2] = y0;
    out[3] = x1;
    out[4] = y1;
    r->len += 5;
    return 0;
}

/* Emits the live regions of f at cut s. opencv: boxes as the benchmark makes them from boundingRect
 * (one pixel wider on the right and at the bottom, clipped). */
static int emit_regions(Forest *f, const Grid *g, Rows *rows, int64_t s, int opencv)
{
    for (int32_t k = 0; k < f->num_live; k++) {
        Node *n = &f->nodes[f->live[k]];
        n->row = (int32_t)(rows->len / 5);
        int64_t x1 = n->x1, y0 = n->first / g->Wp - 1, y1 = n->last / g->Wp - 1;
        if (opencv) {
            x1 = x1 + 1 < g->W ? x1 + 1 : g->W - 1;
            y1 = y1 + 1 < g->H ? y1 + 1 : g->H - 1;
        }
        if (rows_push(rows, s, n->x0, y0, x1, y1) < 0)
            return -1;
    }
    return 0;
}

/* Live node of largest weight; ties to the largest first pixel if last_wins, else the smallest.
 * NULL if none. */
static Node *largest(Forest *f, int last_wins)
{
    Node *best = NULL;
    for (int32_t k = 0; k < f->num_live; k++) {
        Node *n = &f->nodes[f->live[k]];
        if (!best) {
            best = n;
            continue;
        }
        if (n->weight > best->weight ||
            (n->weight == best->weight && (last_wins ? n->first > best->first : n->first < best->first)))
            best = n;
    }
    return best;
}

/* Contour area of the filled image's regions at every cut, all together: area[v] is the number of
 * half pixels that its cells (2x2 pixels) count once the cut is below stored level v, i.e. a cell
 * counts half a pixel below its second lowest corner and another below its lowest (see area8). */
static void filled_cell_areas(const Grid *g, const int32_t *fill, int64_t *area)
{
    /* Four histograms, by column: neighbouring cells mostly have the same levels, and incrementing
     * one counter twice in a row waits for the first increment. */
    int32_t count[4][258] = {{0}};
    for (int y = 1; y < g->H; y++) {
        const int32_t *a = fill + (Py_ssize_t)y * g->Wp, *b = a + g->Wp;
        for (Py_ssize_t x = 1; x < g->W; x++) {
            int32_t lo1 = a[x] < a[x + 1] ? a[x] : a[x + 1], hi1 = a[x] ^ a[x + 1] ^ lo1;
            int32_t lo2 = b[x] < b[x + 1] ? b[x] : b[x + 1], hi2 = b[x] ^ b[x + 1] ^ lo2;
            int32_t lowest = lo1 < lo2 ? lo1 : lo2, other = lo1 ^ lo2 ^ lowest, hi = hi1 < hi2 ? hi1 : hi2;
            count[x & 3][lowest]++;
            count[(x + 2) & 3][hi ^ ((other ^ hi) & -(other < hi))]++; /* min, without a branch */
        }
    }
    area[257] = 0;
    for (int v = 256; v >= 0; v--) /* counted at cuts below v: a sum from the top */
        area[v] = area[v + 1] + count[0][v] + count[1][v] + count[2][v] + count[3][v];
}

/* Turns per-level counts into the position of each level's first pixel. */
static void count_to_start(Py_ssize_t *start, int num_levels)
{
    Py_ssize_t total = 0;
    for (int v = 0; v <= num_levels + 1; v++) {
        Py_ssize_t count = start[v];
        start[v] = total;
        total += count;
    }
}

/* Pixels in ascending order of level (1..num_levels on the padded grid), raster order within a
 * level, packed as y << shift | x. start[v] is the position of the first pixel of level v, so that
 * bound(c) below is the number of pixels of level <= c + 1, i.e. of original level <= c. With fill,
 * the pixels of depressions (fill > level) are also sorted on their own into deep, deep_start. */
static void counting_sort(const Grid *g, const int32_t *level, int num_levels, uint32_t *order, Py_ssize_t *start,
                          const int32_t *fill, uint32_t *deep, Py_ssize_t *deep_start)
{
    memset(start, 0, sizeof(Py_ssize_t) * (size_t)(num_levels + 2));
    if (fill)
        memset(deep_start, 0, sizeof(Py_ssize_t) * (size_t)(num_levels + 2));
    for (int y = 1; y <= g->H; y++) {
        const int32_t *c = level + (Py_ssize_t)y * g->Wp, *f = fill ? fill + (Py_ssize_t)y * g->Wp : NULL;
        for (Py_ssize_t x = 1; x <= g->W; x++) {
            start[c[x]]++;
            if (f)
                deep_start[c[x]] += f[x] > c[x];
        }
    }
    count_to_start(start, num_levels);
    if (fill)
        count_to_start(deep_start, num_levels);
    /* start[v] runs to the end of level v here, and back to its beginning below. */
    for (int y = 1; y <= g->H; y++) {
        const int32_t *c = level + (Py_ssize_t)y * g->Wp, *f = fill ? fill + (Py_ssize_t)y * g->Wp : NULL;
        uint32_t row = (uint32_t)(y - 1) << g->shift;
        for (Py_ssize_t x = 1; x <= g->W; x++) {
            order[start[c[x]]++] = row | (uint32_t)(x - 1);
            if (f) { /* without a branch: the others write to a spare slot */
                int in = f[x] > c[x];
                uint32_t spare, *to = in ? &deep[deep_start[c[x]]] : &spare;
                *to = row | (uint32_t)(x - 1);
                deep_start[c[x]] += in;
            }
        }
    }
    memmove(start + 1, start, sizeof(Py_ssize_t) * (size_t)(num_levels + 1));
    start[0] = 0;
    if (fill) {
        memmove(deep_start + 1, deep_start, sizeof(Py_ssize_t) * (size_t)(num_levels + 1));
        deep_start[0] = 0;
    }
}

static inline Py_ssize_t bound(const Py_ssize_t *start, int num_levels, int64_t cut)
{
    int64_t v = cut + 2;
    return start[v < 1 ? 1 : v > num_levels + 1 ? num_levels + 1 : v];
}

static int grid_init(Grid *g, Py_ssize_t H, Py_ssize_t W)
{
    /* Padded indices are int32; then the bits of y and x also fit in 32. */
    if (H < 1 || W < 1 || (double)(H + 2) * (double)(W + 2) >= (double)INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "maps of %zd x %zd pixels are not supported", H, W);
        return -1;
    }
    g->H = (int)H;
    g->W = (int)W;
    g->Wp = (int)W + 2;
    g->padded = (H + 2) * (W + 2);
    g->shift = 0;
    while (((Py_ssize_t)1 << g->shift) < W)
        g->shift++;
    const int32_t off[8] = {-g->Wp - 1, -g->Wp, -g->Wp + 1, -1, 1, g->Wp - 1, g->Wp, g->Wp + 1};
    memcpy(g->off, off, sizeof(off));
    return 0;
}

/* Each row's box's IoU with the ground-truth box it overlaps best, as float64 bytes: the arithmetic
 * of boxes.box_iou step for step (inclusive pixel boxes, 0 where the union is not positive), so
 * the values are the same to the bit; the build turns off fused multiply-adds for that. */
static PyObject *rows_iou(const Rows *rows, const Py_buffer *gt)
{
    Py_ssize_t n = rows->len / 5, m = gt->len / (Py_ssize_t)(4 * sizeof(double));
    PyObject *out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)sizeof(double) * n);
    if (!out)
        return NULL;
    double *iou = (double *)PyByteArray_AS_STRING(out);
    const double *b = gt->buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        const int64_t *r = rows->data + 5 * k + 1;
        double x0 = (double)r[0], y0 = (double)r[1], x1 = (double)r[2], y1 = (double)r[3], best = 0;
        double area = (x1 - x0 + 1) * (y1 - y0 + 1);
        for (Py_ssize_t j = 0; j < m; j++) {
            const double *g = b + 4 * j;
            double w = (x1 < g[2] ? x1 : g[2]) - (x0 > g[0] ? x0 : g[0]) + 1;
            double h = (y1 < g[3] ? y1 : g[3]) - (y0 > g[1] ? y0 : g[1]) + 1;
            double inter = (w > 0 ? w : 0) * (h > 0 ? h : 0);
            double uni = area + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - inter;
            double v = uni > 0 ? inter / uni : 0;
            best = v > best ? v : best;
        }
        iou[k] = best;
    }
    return out;
}

/* (rows, largest, iou): iou is None without ground-truth boxes. */
static PyObject *result(Rows *rows, int64_t *best, Py_ssize_t num_cuts, const Py_buffer *gt)
{
    PyObject *r = PyByteArray_FromStringAndSize((const char *)rows->data, (Py_ssize_t)sizeof(int64_t) * rows->len);
    PyObject *b = PyByteArray_FromStringAndSize((const char *)best, (Py_ssize_t)sizeof(int64_t) * num_cuts);
    PyObject *i = gt->obj ? rows_iou(rows, gt) : Py_NewRef(Py_None);
    if (!r || !b || !i) {
        Py_XDECREF(r);
        Py_XDECREF(b);
        Py_XDECREF(i);
        return NULL;
    }
    return Py_BuildValue("(NNN)", r, b, i);
}

/* Optional ground-truth boxes: float64 bytes, four per box, at least one box. */
static int check_gt(const Py_buffer *gt)
{
    if (gt->obj && (gt->len == 0 || gt->len % (Py_ssize_t)(4 * sizeof(double)))) {
        PyErr_SetString(PyExc_ValueError, "ground-truth boxes must be float64 bytes, four per box, at least one box");
        return -1;
    }
    return 0;
}

#define PIXEL(p, y, x, order, k, g)                                                          \
    uint32_t yx = order[k];                                                                  \
    int32_t y = (int32_t)(yx >> (g).shift), x = (int32_t)(yx & ((1u << (g).shift) - 1)), \
            p = (y + 1) * (g).Wp + x + 1

/* Adds the pixels at positions end..*top - 1 of order, from the top, to f. */
static inline void add_down(Forest *f, const Grid *g, const uint32_t *order, Py_ssize_t *top, Py_ssize_t end, int what)
{
    for (Py_ssize_t k = *top - 1; k >= end; k--) {
        PIXEL(p, y, x, order, k, *g);
        add8(f, g, p, x, what);
    }
    if (end < *top)
        *top = end;
}

/* The state of a benchmark_regions call that its passes share. */
typedef struct {
    Grid g;
    const int64_t *cuts;
    Py_ssize_t num_cuts, n;
    int32_t *level, *fill, *entry, *link; /* padded levels and filled levels; the fill's queue */
    uint32_t *order, *hole_order;         /* pixels by level; pixels of depressions by level */
    Py_ssize_t start[258], hole_start[258];
    int64_t *best; /* per cut, the row of the largest contour */
    Forest holes, fg, filled;
} Bench;

/* Checks the arguments, takes the arrays from the call's arena and reads the image's levels. */
static int bench_open(Bench *b, Call *c, Py_ssize_t H, Py_ssize_t W)
{
    b->num_cuts = c->cuts.len / (Py_ssize_t)sizeof(int64_t);
    b->cuts = c->cuts.buf;
    if (grid_init(&b->g, H, W) < 0 || check_gt(&c->gt) < 0)
        return -1;
    if (c->map.len != H * W || b->num_cuts * (Py_ssize_t)sizeof(int64_t) != c->cuts.len) {
        PyErr_SetString(PyExc_ValueError, "image or cuts have the wrong size");
        return -1;
    }
    const Grid *g = &b->g;
    b->n = H * W;
    size_t P = (size_t)g->padded, N = (size_t)b->n, C = (size_t)(b->num_cuts ? b->num_cuts : 1);
    if (arena_open(c, 2 * rounded(4 * P) + 2 * rounded(8 * N) + 2 * rounded(4 * N) + rounded(8 * C) +
                          3 * forest_bytes(g, b->n)) < 0)
        return -1;
    b->level = scratch(c, 4 * P);
    b->fill = scratch(c, 4 * P);
    b->entry = scratch(c, 8 * N);
    b->link = scratch(c, 8 * N);
    b->order = scratch(c, 4 * N);
    b->hole_order = scratch(c, 4 * N);
    b->best = scratch(c, 8 * C);
    forest_init(&b->holes, g, b->n, c);
    forest_init(&b->fg, g, b->n, c);
    forest_init(&b->filled, g, b->n, c);
    clear_frame(g, b->level);
    clear_frame(g, b->fill);
    for (int y = 0; y < g->H; y++) {
        const uint8_t *src = (const uint8_t *)c->map.buf + (Py_ssize_t)y * W;
        int32_t *dst = b->level + (Py_ssize_t)(y + 1) * g->Wp + 1;
        for (int x = 0; x < g->W; x++)
            dst[x] = src[x] + 1;
    }
    return 0;
}

/* Holes, cuts ascending. A pixel is in a hole of image > cut exactly when level <= cut < fill: the
 * holes are the 4-connected regions of such pixels, found by a union-find over the pixels of
 * depressions (fill > level) in ascending order of level. */
static int hole_rows(Bench *b, Call *c)
{
    const Grid *g = &b->g;
    Forest *holes = &b->holes;
    fill_holes(g, b->level, b->fill, b->entry, b->link);
    masks_holes(g, b->level, b->fill, holes->parent);
    counting_sort(g, b->level, 256, b->order, b->start, b->fill, b->hole_order, b->hole_start);
    Py_ssize_t k = 0;
    for (Py_ssize_t s = 0; s < b->num_cuts; s++) {
        for (Py_ssize_t end = bound(b->hole_start, 256, b->cuts[s]); k < end; k++) {
            PIXEL(p, y, x, b->hole_order, k, *g);
            add_hole(holes, g, p, x, b->fill[p]);
        }
        for (int32_t j = 0; j < holes->num_live; j++) {
            Node *h = &holes->nodes[holes->live[j]];
            if (h->opens <= b->cuts[s] + 1) { /* outside from this cut on */
                live_remove(holes, h);
                j--;
                continue;
            }
            /* An inner contour runs one pixel outside its hole. */
            int64_t y0 = h->first / g->Wp - 1, y1 = h->last / g->Wp - 1;
            int64_t x1 = h->x1 + 2 < g->W ? h->x1 + 2 : g->W - 1, y2 = y1 + 2 < g->H ? y1 + 2 : g->H - 1;
            if (rows_push(&c->rows, s, h->x0 - 1, y0 - 1, x1, y2) < 0)
                return -1;
        }
    }
    return 0;
}

/* The largest contour at cut s among the live regions of fg, whose own areas decide it unless the
 * holes' excess could change the answer: then best[s] is -1 and the outermost regions' (cut, first
 * pixel, row) wait in the call's undecided rows for the filled image's pass. */
static int choose_largest(Bench *b, Call *c, Py_ssize_t s, int64_t excess)
{
    Forest *fg = &b->fg;
    int64_t outside = b->cuts[s] + 1; /* the pixel above an outermost region's first is <= this */
    Node *best = NULL;
    int32_t second = -1;
    for (int32_t j = 0; j < fg->num_live; j++) {
        Node *r = &fg->nodes[fg->live[j]];
        if (b->fill[r->first - b->g.Wp] > outside)
            continue; /* an island in a hole */
        excess -= r->weight;
        if (!best || r->weight > best->weight || (r->weight == best->weight && r->first > best->first)) {
            second = best && best->weight > second ? best->weight : second;
            best = r;
        } else if (r->weight > second) {
            second = r->weight;
        }
    }
    if (excess == 0 || best->weight > second + excess) {
        b->best[s] = best->row;
        return 0;
    }
    b->best[s] = -1;
    for (int32_t j = 0; j < fg->num_live; j++) {
        Node *r = &fg->nodes[fg->live[j]];
        if (b->fill[r->first - b->g.Wp] <= outside && rows_push(&c->undecided, s, r->first, r->row, 0, 0) < 0)
            return -1;
    }
    return 0;
}

/* Regions, cuts descending, with boxes, first pixels and the area of their own cells. OpenCV lists
 * contours depth first, later-found siblings first, and a contour's area is at least that of anything
 * inside it: the largest contour is that of an outermost region (one surrounded by the outside, as
 * the pixel above its first pixel tells), ties to the last found, i.e. the one whose first pixel
 * comes last. Its area is that of the region with its holes filled: its own cells' area plus at most
 * the cut's excess, the filled image's cell area less the outermost regions' own. Where the best
 * region's own area beats every other's by more than the excess, the holes cannot change the answer;
 * elsewhere (rarely) a pass over the filled image decides. */
static int region_rows(Bench *b, Call *c)
{
    int64_t filled_area[258];
    filled_cell_areas(&b->g, b->fill, filled_area);
    masks_descending(&b->g, b->level, b->fg.parent);
    Py_ssize_t top = b->n;
    for (Py_ssize_t s = b->num_cuts - 1; s >= 0; s--) {
        int64_t cut = b->cuts[s];
        add_down(&b->fg, &b->g, b->order, &top, bound(b->start, 256, cut), BOXES | AREAS);
        if (emit_regions(&b->fg, &b->g, &c->rows, s, 1) < 0)
            return -1;
        if (!b->fg.num_live) {
            b->best[s] = c->rows.len / 5;
            if (rows_push(&c->rows, s, 0, 0, 0, 0) < 0)
                return -1;
        } else if (choose_largest(b, c, s, filled_area[cut + 2 < 0 ? 0 : cut + 2 > 257 ? 257 : cut + 2]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The undecided cuts: the regions of the filled image are the outermost regions with their holes
 * filled, and hold their first pixels. */
static void decide_by_filled(Bench *b, const Rows *undecided)
{
    if (!undecided->len)
        return;
    uint32_t *fill_order = (uint32_t *)b->entry; /* the queue is done with */
    Py_ssize_t fill_start[258], fill_top = b->n;
    counting_sort(&b->g, b->fill, 256, fill_order, fill_start, NULL, NULL, NULL);
    masks_descending(&b->g, b->fill, b->filled.parent);
    for (Py_ssize_t s = b->num_cuts - 1; s >= 0; s--) {
        add_down(&b->filled, &b->g, fill_order, &fill_top, bound(fill_start, 256, b->cuts[s]), FIRST | AREAS);
        if (b->best[s] >= 0)
            continue;
        Node *best = largest(&b->filled, 1);
        for (Py_ssize_t j = 0; j < undecided->len; j += 5)
            if (undecided->data[j] == s && undecided->data[j + 1] == best->first)
                b->best[s] = undecided->data[j + 2];
    }
}

static const char benchmark_doc[] =
    "benchmark_regions(image, height, width, cuts[, gt]) -> (rows, largest, iou)\n\n"
    "OpenCV's contours of image > cut (image: uint8 bytes, row-major) at every ascending int64 cut:\n"
    "rows of int64 (cut index, x0, y0, x1, y1) with the benchmark's boxes, and per cut the row of the\n"
    "largest contour ([0, 0, 0, 0] rows where nothing is left). gt: float64 ground-truth boxes\n"
    "(x0, y0, x1, y1, inclusive); iou: float64 bytes, each row's box's best IoU with them (None\n"
    "without gt).";

static PyObject *benchmark_regions(PyObject *self, PyObject *args)
{
    (void)self;
    Call c = {0};
    Py_ssize_t H, W;
    if (!PyArg_ParseTuple(args, "y*nny*|y*", &c.map, &H, &W, &c.cuts, &c.gt))
        return NULL;
    Bench b;
    if (bench_open(&b, &c, H, W) < 0 || hole_rows(&b, &c) < 0 || region_rows(&b, &c) < 0)
        return call_end(&c, NULL);
    decide_by_filled(&b, &c.undecided);
    return call_end(&c, result(&c.rows, b.best, b.num_cuts, &c.gt));
}

static const char float_doc[] =
    "float_regions(scores, itemsize, height, width, thresholds[, gt]) -> (rows, largest, iou)\n\n"
    "The 8-connected regions of scores >= t (scores: float32 or float64 bytes, row-major) at every\n"
    "ascending float64 threshold t: rows of int64 (threshold index, x0, y0, x1, y1) with tight boxes,\n"
    "and per threshold the row of the region with the most pixels, ties to the one met first in\n"
    "raster order (-1 where nothing is left). gt and iou as in benchmark_regions.";

/* Level of a pixel: the number of thresholds at or below its score (it is in the foreground of
 * threshold j exactly when its level exceeds j). A table over equal bins of [0, 1] gives a guess that
 * exact comparisons then correct, in a step or two for any grid. */
static void float_levels(const Grid *g, const Py_buffer *scores, Py_ssize_t itemsize, const double *t, Py_ssize_t T,
                         int32_t *lut, int32_t *level)
{
    Py_ssize_t bins = 4 * T;
    for (Py_ssize_t b = 0, j = 0; b <= bins; b++) {
        double edge = (double)b / (double)bins;
        while (j < T && t[j] <= edge)
            j++;
        lut[b] = (int32_t)j;
    }
    for (int y = 0; y < g->H; y++)
        for (int x = 0; x < g->W; x++) {
            Py_ssize_t i = (Py_ssize_t)y * g->W + x;
            double v = itemsize == 4 ? (double)((const float *)scores->buf)[i] : ((const double *)scores->buf)[i];
            double scaled = v * (double)bins;
            Py_ssize_t b = scaled <= 0 ? 0 : scaled >= (double)bins ? bins : (Py_ssize_t)scaled;
            int32_t j = lut[b];
            while (j > 0 && t[j - 1] > v)
                j--;
            while (j < T && t[j] <= v)
                j++;
            level[(Py_ssize_t)(y + 1) * g->Wp + x + 1] = j + 1;
        }
}

static PyObject *float_regions(PyObject *self, PyObject *args)
{
    (void)self;
    Call c = {0};
    Py_ssize_t itemsize, H, W;
    if (!PyArg_ParseTuple(args, "y*nnny*|y*", &c.map, &itemsize, &H, &W, &c.cuts, &c.gt))
        return NULL;
    Grid g;
    Forest fg = {0};
    Py_ssize_t T = c.cuts.len / (Py_ssize_t)sizeof(double);
    const double *t = c.cuts.buf;
    if (grid_init(&g, H, W) < 0 || check_gt(&c.gt) < 0)
        return call_end(&c, NULL);
    if ((itemsize != 4 && itemsize != 8) || c.map.len != H * W * itemsize ||
        T * (Py_ssize_t)sizeof(double) != c.cuts.len || T < 1 || T >= INT32_MAX / 8) {
        PyErr_SetString(PyExc_ValueError, "scores or thresholds have the wrong size");
        return call_end(&c, NULL);
    }
    size_t P = (size_t)g.padded, N = (size_t)(H * W);
    if (arena_open(&c, rounded(4 * P) + rounded(4 * (size_t)(4 * T + 1)) + rounded(4 * N) +
                           rounded(sizeof(Py_ssize_t) * (size_t)(T + 3)) + rounded(8 * (size_t)T) +
                           forest_bytes(&g, H * W)) < 0)
        return call_end(&c, NULL);
    int32_t *level = scratch(&c, 4 * P), *lut = scratch(&c, 4 * (size_t)(4 * T + 1));
    uint32_t *order = scratch(&c, 4 * N);
    Py_ssize_t *start = scratch(&c, sizeof(Py_ssize_t) * (size_t)(T + 3));
    int64_t *best = scratch(&c, 8 * (size_t)T);
    forest_init(&fg, &g, H * W, &c);
    clear_frame(&g, level);
    float_levels(&g, &c.map, itemsize, t, T, lut, level);
    int num_levels = (int)T + 1;
    counting_sort(&g, level, num_levels, order, start, NULL, NULL, NULL);
    masks_descending(&g, level, fg.parent);
    Py_ssize_t top = H * W;
    for (Py_ssize_t s = T - 1; s >= 0; s--) {
        add_down(&fg, &g, order, &top, bound(start, num_levels, s), BOXES);
        if (emit_regions(&fg, &g, &c.rows, s, 0) < 0)
            return call_end(&c, NULL);
        Node *b = largest(&fg, 0);
        best[s] = b ? b->row : -1;
    }
    return call_end(&c, result(&c.rows, best, T, &c.gt));
}

static PyMethodDef methods[] = {
    {"benchmark_regions", benchmark_regions, METH_VARARGS, benchmark_doc},
    {"float_regions", float_regions, METH_VARARGS, float_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tree", "Compiled core of spgkit.localization.tree.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tree(void)
{
    init_tables();
    return PyModule_Create(&module);
}
