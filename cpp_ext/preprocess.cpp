// pig._preprocess: batched uint8 RGB frames -> normalised CHW float32/float16 (or resized CHW
// uint8 for graphs that normalise inside), one fused pass.
//
// Per output row: a vertical pass blends the source rows (uint8 -> float) into a float scratch
// row covering only the needed columns, then a horizontal pass blends 3-channel pixels of that
// row and applies /255 + mean/std in one multiply-add per value, writing three CHW planes.
// Filter taps are precomputed once per distinct frame size and reproduce torch's CPU kernels:
//   squash_bicubic            F.interpolate(bicubic, align_corners=False), a = -0.75, clamped
//                             border indices, no value clamping;
//   shorter_side_center_crop  F.interpolate(bicubic, antialias=True) (PIL-style support
//                             scaling, a = -0.5, normalised weights) to torchvision Resize(S)'s
//                             size, evaluated only on the CenterCrop(S) window.
// Work (frame, band of rows) is spread over std::threads with the GIL released. Hot loops are
// compiled twice (baseline x86-64 and x86-64-v3) and picked at load time by the dynamic loader,
// so the .so runs on any x86-64 CPU without -march=native.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace py = pybind11;

// target_clones needs GNU ifunc (glibc) and GCC >= 6 or Clang >= 14.
#if defined(__x86_64__) && defined(__GLIBC__) && (!defined(__clang__) || __clang_major__ >= 14)
#define PIG_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PIG_HOT
#endif
#define PIG_INLINE inline __attribute__((always_inline))

namespace {

constexpr int64_t kMaxSide = 1 << 20;

// Taps of a 1-D resampling: output o reads count[o] source indices with weights.
struct Axis {
    int stride = 0;  // slots per output in index/weight
    std::vector<int> count;
    std::vector<int> index;
    std::vector<float> weight;
    int lo = 0;  // smallest source index used
    int hi = 0;  // one past the largest source index used

    void init(int outputs, int slots) {
        stride = slots;
        count.assign(outputs, 0);
        index.assign(static_cast<size_t>(outputs) * slots, 0);
        weight.assign(static_cast<size_t>(outputs) * slots, 0.f);
        lo = INT32_MAX;
        hi = 0;
    }
    // Zero weights are dropped: adding 0 * x never changes a sum of finite values.
    void add(int o, int src, float w) {
        if (w == 0.f) return;
        const size_t k = static_cast<size_t>(o) * stride + count[o]++;
        index[k] = src;
        weight[k] = w;
        lo = std::min(lo, src);
        hi = std::max(hi, src + 1);
    }
    // Fixed `stride` taps per output (padded with zero weights) and index -> (index - base) *
    // scale, for the branch-free horizontal pass.
    void pack(int base, int scale) {
        const int taps = *std::max_element(count.begin(), count.end());
        const size_t n = count.size();
        std::vector<int> idx(n * taps);
        std::vector<float> w(n * taps, 0.f);
        for (size_t o = 0; o < n; ++o)
            for (int k = 0; k < taps; ++k) {
                const size_t from = o * stride + std::min(k, count[o] - 1);
                idx[o * taps + k] = (index[from] - base) * scale;
                if (k < count[o]) w[o * taps + k] = weight[from];
            }
        stride = taps;
        count.assign(n, taps);
        index.swap(idx);
        weight.swap(w);
    }
    void finish(int in) {
        for (size_t o = 0; o < count.size(); ++o)
            if (count[o] == 0) add(static_cast<int>(o), 0, 0.f);  // degenerate: all-zero taps
        if (lo == INT32_MAX) lo = 0, hi = std::min(in, 1);
    }
};

// Keys cubic pieces for |x| <= 1 and 1 < |x| < 2, evaluated with the fused multiply-adds that
// torch's AVX2 build uses: the pieces cancel to small weights and rounding otherwise differs.
float cubic1(float x, float a) { return std::fma(std::fma(a + 2, x, -(a + 3)) * x, x, 1.f); }
float cubic2(float x, float a) {
    return std::fma(std::fma(std::fma(a, x, -5 * a), x, 8 * a), x, -4 * a);
}

// torch upsample_bicubic2d, align_corners=False: 4 taps around floor(src), indices clamped.
Axis bicubic_axis(int in, int out) {
    Axis ax;
    ax.init(out, 4);
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    const float a = -0.75f;
    for (int o = 0; o < out; ++o) {
        // Rounded once, as torch's (FMA-contracted) AVX2 kernel does: at large coordinates the
        // fractional part keeps only a few bits and the double rounding would show (~1e-4).
        const float real = std::fma(scale, static_cast<float>(o) + 0.5f, -0.5f);
        const float fl = std::floor(real);
        const float t = real - fl;
        const int i0 = static_cast<int>(fl);
        const float w[4] = {cubic2(t + 1.f, a), cubic1(t, a), cubic1(1.f - t, a),
                            cubic2(2.f - t, a)};
        for (int k = 0; k < 4; ++k) ax.add(o, std::clamp(i0 - 1 + k, 0, in - 1), w[k]);
    }
    ax.finish(in);
    return ax;
}

float aa_cubic(float x) {
    const float a = -0.5f;
    x = std::fabs(x);
    if (x < 1.f) return cubic1(x, a);
    if (x < 2.f) return cubic2(x, a);
    return 0.f;
}

// torch separable antialias bicubic (input -> `resized`), for outputs [first, first + out).
Axis antialias_axis(int in, int resized, int first, int out) {
    const float scale = static_cast<float>(in) / static_cast<float>(resized);
    const float support = scale >= 1.f ? 2.f * scale : 2.f;
    const float invscale = scale >= 1.f ? 1.f / scale : 1.f;
    Axis ax;
    ax.init(out, static_cast<int>(std::ceil(support)) * 2 + 1);
    std::vector<float> w(ax.stride);
    for (int o = 0; o < out; ++o) {
        const float center = scale * (static_cast<float>(first + o) + 0.5f);
        const int xmin = std::max(static_cast<int>(center - support + 0.5f), 0);
        const int xsize = std::min(std::min(static_cast<int>(center + support + 0.5f), in) - xmin,
                                   ax.stride);
        float total = 0.f;
        for (int j = 0; j < xsize; ++j) {
            w[j] = aa_cubic((static_cast<float>(j + xmin) - center + 0.5f) * invscale);
            total += w[j];
        }
        for (int j = 0; j < xsize; ++j) ax.add(o, xmin + j, total != 0.f ? w[j] / total : w[j]);
    }
    ax.finish(in);
    return ax;
}

struct Plan {
    Axis rows, cols;  // cols: packed, offsets into the scratch row
};

Plan make_plan(const std::string& mode, int h, int w, int s) {
    Plan p;
    if (mode == "squash_bicubic") {
        p.rows = bicubic_axis(h, s);
        p.cols = bicubic_axis(w, s);
    } else {
        // torchvision Resize(s): shorter side -> s, longer -> int(s * long / short);
        // CenterCrop(s): offset int(round((size - s) / 2)), Python round (half to even).
        const bool portrait = w <= h;
        const int64_t shorter = portrait ? w : h, longer = portrait ? h : w;
        const int new_long = static_cast<int>(static_cast<double>(int64_t{s} * longer) /
                                              static_cast<double>(shorter));
        const int rh = portrait ? new_long : s, rw = portrait ? s : new_long;
        const int top = static_cast<int>(std::nearbyint((rh - s) / 2.0));
        const int left = static_cast<int>(std::nearbyint((rw - s) / 2.0));
        p.rows = antialias_axis(h, rh, top, s);
        p.cols = antialias_axis(w, rw, left, s);
    }
    p.cols.pack(p.cols.lo, 3);
    return p;
}

// acc[j] (=|+=) sum_g w[g] * src[g][j] for G source rows.
template <int G, bool Accumulate>
PIG_INLINE void blend_rows(const uint8_t* const* src, const float* w, int len,
                           float* __restrict acc) {
    const uint8_t* __restrict s0 = src[0];
    const uint8_t* __restrict s1 = src[G > 1 ? 1 : 0];
    const uint8_t* __restrict s2 = src[G > 2 ? 2 : 0];
    const uint8_t* __restrict s3 = src[G > 3 ? 3 : 0];
    const float w0 = w[0], w1 = G > 1 ? w[1] : 0.f, w2 = G > 2 ? w[2] : 0.f,
                w3 = G > 3 ? w[3] : 0.f;
    for (int j = 0; j < len; ++j) {
        float v = Accumulate ? acc[j] : 0.f;
        v += w0 * static_cast<float>(s0[j]);
        if constexpr (G > 1) v += w1 * static_cast<float>(s1[j]);
        if constexpr (G > 2) v += w2 * static_cast<float>(s2[j]);
        if constexpr (G > 3) v += w3 * static_cast<float>(s3[j]);
        acc[j] = v;
    }
}

template <bool Accumulate>
PIG_INLINE void blend_group(const uint8_t* const* src, const float* w, int g, int len, float* acc) {
    switch (g) {
        case 1: blend_rows<1, Accumulate>(src, w, len, acc); break;
        case 2: blend_rows<2, Accumulate>(src, w, len, acc); break;
        case 3: blend_rows<3, Accumulate>(src, w, len, acc); break;
        default: blend_rows<4, Accumulate>(src, w, len, acc); break;
    }
}

// Vertical pass: `n` source rows (already offset to the first needed column) into `acc`.
PIG_HOT void vertical_pass(const uint8_t* const* src, const float* w, int n, int len, float* acc) {
    const int g = std::min(n, 4);
    blend_group<false>(src, w, g, len, acc);
    for (int k = g; k < n; k += 4) blend_group<true>(src + k, w + k, std::min(n - k, 4), len, acc);
}

typedef float v4f __attribute__((vector_size(16)));

// One output pixel: sum_k w[k] * (r, g, b, _) at row + idx[k] (row padded by one float).
template <int Taps>
PIG_INLINE v4f pixel(const float* row, const int* idx, const float* w, int taps) {
    if constexpr (Taps > 0) taps = Taps;
    v4f sum = {0.f, 0.f, 0.f, 0.f};
    for (int k = 0; k < taps; ++k) {
        v4f px;
        std::memcpy(&px, row + idx[k], sizeof(px));
        sum += px * w[k];
    }
    return sum;
}

// Horizontal pass over an interleaved RGB float row, normalising: plane c gets
// sum * scale[c] + shift[c]. Four pixels at a time, transposed to three 4-wide plane stores.
template <int Taps>
PIG_INLINE void horizontal_impl(const float* row, const Axis& cols, const float* scale,
                                const float* shift, float* p0, float* p1, float* p2) {
    const int n_out = static_cast<int>(cols.count.size()), t = cols.stride;
    const int* idx = cols.index.data();
    const float* w = cols.weight.data();
    const v4f s0 = v4f{} + scale[0], s1 = v4f{} + scale[1], s2 = v4f{} + scale[2];
    const v4f h0 = v4f{} + shift[0], h1 = v4f{} + shift[1], h2 = v4f{} + shift[2];
    int x = 0;
    for (; x + 4 <= n_out; x += 4) {
        const size_t b = static_cast<size_t>(x) * t;
        const v4f a = pixel<Taps>(row, idx + b, w + b, t);
        const v4f c = pixel<Taps>(row, idx + b + t, w + b + t, t);
        const v4f d = pixel<Taps>(row, idx + b + 2 * t, w + b + 2 * t, t);
        const v4f e = pixel<Taps>(row, idx + b + 3 * t, w + b + 3 * t, t);
        const v4f r = v4f{a[0], c[0], d[0], e[0]} * s0 + h0;
        const v4f g = v4f{a[1], c[1], d[1], e[1]} * s1 + h1;
        const v4f bl = v4f{a[2], c[2], d[2], e[2]} * s2 + h2;
        std::memcpy(p0 + x, &r, sizeof(r));
        std::memcpy(p1 + x, &g, sizeof(g));
        std::memcpy(p2 + x, &bl, sizeof(bl));
    }
    for (; x < n_out; ++x) {
        const size_t b = static_cast<size_t>(x) * t;
        const v4f a = pixel<Taps>(row, idx + b, w + b, t);
        p0[x] = a[0] * scale[0] + shift[0];
        p1[x] = a[1] * scale[1] + shift[1];
        p2[x] = a[2] * scale[2] + shift[2];
    }
}

PIG_HOT void horizontal_pass(const float* row, const Axis& cols, const float* scale,
                             const float* shift, float* p0, float* p1, float* p2) {
    if (cols.stride == 4)  // bicubic: fully unrolled taps
        horizontal_impl<4>(row, cols, scale, shift, p0, p1, p2);
    else
        horizontal_impl<0>(row, cols, scale, shift, p0, p1, p2);
}

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));

// float -> IEEE half bits, round to nearest even (NaN -> quiet NaN, overflow -> inf), 8 lanes
// of branch-free vector code so it compiles to SIMD on any target (F16C is not baseline).
PIG_INLINE v8h to_half(v8f f) {
    v8u bits;
    std::memcpy(&bits, &f, sizeof(bits));
    const v8u sign = (bits >> 16) & 0x8000u;
    const v8u mag = bits & 0x7fffffffu;
    const v8i x = reinterpret_cast<v8i>(mag);  // <= INT32_MAX: signed compares are exact
    const v8u normal = (mag - (112u << 23) + 0xfffu + ((mag >> 13) & 1u)) >> 13;
    v8f magnitude;  // subnormal half: the FPU rounds |f| + 0.5 at the half's last bit
    std::memcpy(&magnitude, &mag, sizeof(mag));
    magnitude += 0.5f;
    v8u sub;
    std::memcpy(&sub, &magnitude, sizeof(sub));
    sub -= 126u << 23;
    v8u h = x < (113 << 23) ? sub : normal;
    const v8u special = x > 0x7f800000 ? v8u{} + 0x7e00u : v8u{} + 0x7c00u;
    h = x >= (143 << 23) ? special : h;
    return __builtin_convertvector(h | sign, v8h);
}

PIG_HOT void store_half(const float* src, uint16_t* dst, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f f;
        std::memcpy(&f, src + i, sizeof(f));
        const v8h h = to_half(f);
        std::memcpy(dst + i, &h, sizeof(h));
    }
    if (i < n) {
        v8f f = {};
        for (int k = 0; k < n - i; ++k) f[k] = src[i + k];
        const v8h h = to_half(f);
        for (int k = 0; k < n - i; ++k) dst[i + k] = h[k];
    }
}

// resized values (0..255 scale) -> uint8: clamp, then round half to even by adding and
// subtracting 1.5 * 2^23 (exact in float32 for 0..255; vectorises, unlike nearbyint)
typedef uint8_t v8b __attribute__((vector_size(8)));

PIG_HOT void store_u8(const float* src, uint8_t* dst, int n) {
    constexpr float kMagic = 12582912.0f;
    const v8f lo = {}, hi = lo + 255.f, magic = lo + kMagic;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f f;
        std::memcpy(&f, src + i, sizeof(f));
        f = f < lo ? lo : f;
        f = f > hi ? hi : f;
        f = (f + magic) - magic;
        const v8b b = __builtin_convertvector(__builtin_convertvector(f, v8i), v8b);
        std::memcpy(dst + i, &b, sizeof(b));
    }
    for (; i < n; ++i) {
        const float v = std::min(std::max(src[i], 0.f), 255.f);
        dst[i] = static_cast<uint8_t>((v + kMagic) - kMagic);
    }
}

struct Job {
    std::vector<const uint8_t*> frames;
    std::vector<std::pair<int, int>> hw;
    std::vector<ptrdiff_t> row_bytes;  // any row stride: padded decoder lines, flips, views
    std::vector<int> plan_of;
    std::vector<Plan> plans;
    int size = 0;
    bool half = false;
    bool u8 = false;  // resized frames as uint8, no normalisation (it is in the graph)
    char* out = nullptr;
    float scale[3], shift[3];
    int bands = 1;
};

void run_rows(const Job& job, int frame, int y0, int y1, std::vector<float>& row,
              std::vector<float>& line) {
    const Plan& p = job.plans[job.plan_of[frame]];
    const int s = job.size;
    const size_t plane = static_cast<size_t>(s) * s;
    const ptrdiff_t row_bytes = job.row_bytes[frame];
    const uint8_t* img = job.frames[frame] + static_cast<size_t>(p.cols.lo) * 3;
    const int len = (p.cols.hi - p.cols.lo) * 3;
    std::vector<const uint8_t*> src(p.rows.stride);
    for (int y = y0; y < y1; ++y) {
        const size_t base = static_cast<size_t>(y) * p.rows.stride;
        const int n = p.rows.count[y];
        for (int k = 0; k < n; ++k) src[k] = img + p.rows.index[base + k] * row_bytes;
        vertical_pass(src.data(), p.rows.weight.data() + base, n, len, row.data());
        const size_t off = static_cast<size_t>(frame) * 3 * plane + static_cast<size_t>(y) * s;
        if (job.u8) {
            horizontal_pass(row.data(), p.cols, job.scale, job.shift, line.data(),
                            line.data() + s, line.data() + 2 * s);
            auto* o = reinterpret_cast<uint8_t*>(job.out) + off;
            for (int c = 0; c < 3; ++c) store_u8(line.data() + c * s, o + c * plane, s);
        } else if (job.half) {
            horizontal_pass(row.data(), p.cols, job.scale, job.shift, line.data(),
                            line.data() + s, line.data() + 2 * s);
            auto* o = reinterpret_cast<uint16_t*>(job.out) + off;
            for (int c = 0; c < 3; ++c) store_half(line.data() + c * s, o + c * plane, s);
        } else {
            float* o = reinterpret_cast<float*>(job.out) + off;
            horizontal_pass(row.data(), p.cols, job.scale, job.shift, o, o + plane, o + 2 * plane);
        }
    }
}

void run_job(const Job& job, int threads) {
    const int n_frames = static_cast<int>(job.frames.size());
    const int items = n_frames * job.bands;
    size_t row_len = 0;
    for (const Plan& p : job.plans)
        row_len = std::max(row_len, static_cast<size_t>(p.cols.hi - p.cols.lo) * 3 + 4);
    std::atomic<int> next{0};
    std::exception_ptr error;
    std::atomic<bool> failed{false};
    auto worker = [&]() {
        try {
            std::vector<float> row(row_len, 0.f), line(3 * static_cast<size_t>(job.size));
            for (int i = next++; i < items && !failed; i = next++) {
                const int f = i / job.bands, b = i % job.bands;
                run_rows(job, f, b * job.size / job.bands, (b + 1) * job.size / job.bands, row,
                         line);
            }
        } catch (...) {
            if (!failed.exchange(true)) error = std::current_exception();
        }
    };
    threads = std::max(1, std::min(threads, items));
    std::vector<std::thread> pool;
    try {
        for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    } catch (...) {
        // Could not start more threads: the ones running (and this one) finish the work.
    }
    worker();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string strides_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.strides(d));
    return s + ")";
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Validates one frame array (`what` names it in messages) and returns (H, W). Pixels must be
// packed RGB; rows and frames may have any stride (PyAV's padded lines, slices, broadcasts).
std::pair<int, int> check_frame(const py::array& a, const std::string& what, int ndim) {
    if (a.dtype().num() != py::dtype::of<uint8_t>().num())
        throw py::type_error(what + ": expected dtype uint8, got " + dtype_str(a));
    if (a.ndim() != ndim || a.shape(ndim - 1) != 3)
        throw py::value_error(what + ": expected shape " +
                              (ndim == 4 ? "(N, H, W, 3)" : "(H, W, 3)") + " (RGB), got " +
                              shape_str(a));
    const int64_t h = a.shape(ndim - 3), w = a.shape(ndim - 2);
    if (h < 1 || w < 1) throw py::value_error(what + ": empty frame " + shape_str(a));
    if (h > kMaxSide || w > kMaxSide)
        throw py::value_error(what + ": frame " + shape_str(a) + " too large (max side " +
                              std::to_string(kMaxSide) + ")");
    if (a.size() > 0 && (a.strides(ndim - 1) != 1 || (w > 1 && a.strides(ndim - 2) != 3)))
        throw py::value_error(what + ": pixels must be packed RGB (strides (..., 3, 1)), got " +
                              "strides " + strides_str(a) + " (use np.ascontiguousarray)");
    return {static_cast<int>(h), static_cast<int>(w)};
}

// Three finite floats from a recipe field (`what` names it).
std::array<double, 3> three_floats(const py::object& seq, const char* what) {
    std::array<double, 3> v{};
    const auto bad = [what] {
        return py::value_error(std::string(what) + " must be 3 finite floats");
    };
    if (!py::isinstance<py::sequence>(seq) || py::isinstance<py::str>(seq) || py::len(seq) != 3)
        throw bad();
    for (size_t c = 0; c < 3; ++c) {
        const py::object item = seq[py::int_(c)];
        try {
            v[c] = item.cast<double>();
        } catch (const py::cast_error&) {
            throw bad();
        }
        if (!std::isfinite(v[c])) throw bad();
    }
    return v;
}

py::array preprocess(const py::object& frames, const py::object& out, const py::object& dtype,
                     const py::object& mode_obj, int size, const py::object& mean_obj,
                     const py::object& std_obj, int threads) {
    if (!py::isinstance<py::str>(mode_obj))
        throw py::type_error("resize mode must be a string");
    const auto mode = mode_obj.cast<std::string>();
    if (mode != "squash_bicubic" && mode != "shorter_side_center_crop")
        throw py::value_error("unknown resize mode '" + mode +
                              "' (expected 'squash_bicubic' or 'shorter_side_center_crop')");
    if (size < 1 || size > kMaxSide)
        throw py::value_error("size must be in [1, " + std::to_string(kMaxSide) + "], got " +
                              std::to_string(size));
    if (threads < 1) throw py::value_error("threads must be >= 1");
    threads = std::min(threads, 1024);
    const auto mean = three_floats(mean_obj, "mean"), std_ = three_floats(std_obj, "std");
    Job job;
    job.size = size;
    for (int c = 0; c < 3; ++c) {
        if (std_[c] == 0) throw py::value_error("std must be non-zero");
        job.scale[c] = static_cast<float>(1.0 / (255.0 * std_[c]));
        job.shift[c] = static_cast<float>(-mean[c] / std_[c]);
    }

    std::vector<py::array> keep;  // references to the inputs while the GIL is released
    if (py::isinstance<py::array>(frames)) {
        auto a = py::reinterpret_borrow<py::array>(frames);
        const auto hw = check_frame(a, "frames", 4);
        if (a.shape(0) == 0) throw py::value_error("frames: empty batch");
        for (py::ssize_t i = 0; i < a.shape(0); ++i) {
            job.frames.push_back(static_cast<const uint8_t*>(a.data()) + i * a.strides(0));
            job.hw.push_back(hw);
            job.row_bytes.push_back(a.strides(1));
        }
        keep.push_back(a);
    } else if (py::isinstance<py::list>(frames) || py::isinstance<py::tuple>(frames)) {
        py::ssize_t i = 0;
        for (const py::handle item : frames) {
            const std::string what = "frames[" + std::to_string(i++) + "]";
            if (!py::isinstance<py::array>(item))
                throw py::type_error(what + ": expected a numpy array, got " +
                                     py::str(py::type::of(item).attr("__name__"))
                                         .cast<std::string>());
            auto a = py::reinterpret_borrow<py::array>(item);
            job.hw.push_back(check_frame(a, what, 3));
            job.frames.push_back(static_cast<const uint8_t*>(a.data()));
            job.row_bytes.push_back(a.strides(0));
            keep.push_back(a);
        }
        if (job.frames.empty()) throw py::value_error("frames: empty batch");
    } else {
        throw py::type_error(
            "frames: expected a uint8 array (N, H, W, 3) or a list of (H, W, 3) arrays, got " +
            py::str(py::type::of(frames).attr("__name__")).cast<std::string>());
    }
    const auto n = static_cast<py::ssize_t>(job.frames.size());

    const py::dtype f32 = py::dtype::of<float>(), f16("float16"), u8 = py::dtype::of<uint8_t>();
    py::array result;
    if (out.is_none()) {
        const py::dtype dt = dtype.is_none() ? f32 : py::dtype::from_args(dtype);
        if (!dt.equal(f32) && !dt.equal(f16) && !dt.equal(u8))
            throw py::type_error("dtype must be float32, float16 or uint8, got " +
                                 py::str(dt).cast<std::string>());
        result = py::array(dt, {n, py::ssize_t{3}, py::ssize_t{size}, py::ssize_t{size}});
    } else {
        if (!py::isinstance<py::array>(out))
            throw py::type_error("out: expected a numpy array, got " +
                                 py::str(py::type::of(out).attr("__name__")).cast<std::string>());
        result = py::reinterpret_borrow<py::array>(out);
        if (!result.dtype().equal(f32) && !result.dtype().equal(f16) && !result.dtype().equal(u8))
            throw py::type_error("out: expected dtype float32, float16 or uint8, got " +
                                 dtype_str(result));
        if (!dtype.is_none() && !result.dtype().equal(py::dtype::from_args(dtype)))
            throw py::type_error("out: dtype " + dtype_str(result) + " does not match dtype=" +
                                 py::str(dtype).cast<std::string>());
        if (result.ndim() != 4 || result.shape(0) != n || result.shape(1) != 3 ||
            result.shape(2) != size || result.shape(3) != size)
            throw py::value_error("out: expected shape (" + std::to_string(n) + ", 3, " +
                                  std::to_string(size) + ", " + std::to_string(size) +
                                  "), got " + shape_str(result));
        if (!(result.flags() & py::array::c_style))
            throw py::value_error("out: must be C-contiguous");
        if (!result.writeable()) throw py::value_error("out: array is read-only");
        if (reinterpret_cast<uintptr_t>(result.data()) % result.itemsize() != 0)
            throw py::value_error("out: array is not aligned to its dtype");
    }
    job.half = result.dtype().equal(f16);
    job.u8 = result.dtype().equal(u8);
    if (job.u8)  // the resized pixel values themselves: 0..255, normalised in the graph
        for (int c = 0; c < 3; ++c) job.scale[c] = 1.f, job.shift[c] = 0.f;
    job.out = static_cast<char*>(result.mutable_data());

    std::map<std::pair<int, int>, int> plan_index;
    for (const auto& hw : job.hw) {
        auto it = plan_index.find(hw);
        if (it == plan_index.end()) {
            it = plan_index.emplace(hw, static_cast<int>(job.plans.size())).first;
            job.plans.push_back(make_plan(mode, hw.first, hw.second, size));
        }
        job.plan_of.push_back(it->second);
    }
    // Enough items to keep every thread busy on small batches; whole frames otherwise.
    job.bands = std::clamp((4 * threads + static_cast<int>(n) - 1) / static_cast<int>(n), 1,
                           size);
    {
        py::gil_scoped_release release;
        run_job(job, threads);
    }
    return result;
}

}  // namespace

PYBIND11_MODULE(_preprocess, m) {
    m.doc() = "Fused batched frame preprocessing (resize + normalise + HWC->CHW).";
    m.def("preprocess", &preprocess, py::arg("frames"), py::arg("out"), py::arg("dtype"),
          py::arg("mode"), py::arg("size"), py::arg("mean"), py::arg("std"), py::arg("threads"),
          "Resize + normalise uint8 RGB frames into (N, 3, size, size) float32/float16, or "
          "resize only into uint8 (rounded half to even, clamped; mean/std unused); "
          "writes into `out` when given, returns the output array.");
}
