// Paddle custom CPU operators running oneDNN primitives: 2-D convolution (forward, backward
// data, backward weights + bias, optional fused ReLU) and 2-D max pooling with a workspace,
// float32.
//
// By default tensors at the operator boundary are plain NCHW / OIHW float32, exactly what
// Paddle's own conv2d and pool2d take and give, and each primitive gets the layout oneDNN
// prefers (format_tag::any) through reorders. Between two of these operators an activation
// may instead stay in oneDNN's blocked layout (nChw8c, or nChw16c on AVX-512): same shape,
// same number of elements, different order; the `blocked_input` / `blocked_output`
// attributes say so, and only a chain of these operators may pass such a tensor on (see
// paddlevision.onednn.OneDNNSequential). Primitive descriptors and primitives are built once per
// configuration and kept.


#include <array>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "paddle/extension.h"

namespace {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The blocked activation layout of this CPU for `channels`, or undef when the channels do
// not fill whole blocks (then the tensor stays plain).
tag blocked_tag(int64_t channels) {
  static const bool avx512 = (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) &
                              static_cast<unsigned>(dnnl::cpu_isa::avx512_core)) ==
                             static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
  const int64_t block = avx512 ? 16 : 8;
  if (channels % block != 0) return tag::undef;
  return avx512 ? tag::nChw16c : tag::nChw8c;
}

memory::desc activation(const memory::dims& dims, bool blocked) {
  tag t = blocked ? blocked_tag(dims[1]) : tag::nchw;
  PD_CHECK(t != tag::undef, "onednn ops: ", dims[1], " channels cannot use the blocked layout");
  return memory::desc(dims, dt::f32, t);
}

memory::desc any(const memory::dims& dims, dt type) { return memory::desc(dims, type, tag::any); }

// A 64-byte aligned, growing scratch buffer; one per role and thread, reused across calls.
class Scratch {
 public:
  ~Scratch() { std::free(ptr_); }
  void* get(size_t bytes) {
    if (bytes > capacity_) {
      std::free(ptr_);
      capacity_ = (bytes + 63) / 64 * 64;
      ptr_ = std::aligned_alloc(64, capacity_);
      PD_CHECK(ptr_ != nullptr, "onednn ops: out of memory allocating ", capacity_, " bytes");
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t capacity_ = 0;
};

enum ScratchRole { kSrc, kWei, kDst, kDiffDst, kDiffDstData, kMasked, kDiffSrc, kDiffWei, kNumRoles };
thread_local Scratch t_scratch[kNumRoles];

// A reorder between the layout of a user tensor and the layout a primitive chose; absent
// when the two are equal, and the primitive then reads or writes the user's tensor itself.
struct Reorder {
  memory::desc from, to;
  std::optional<dnnl::reorder> prim;

  Reorder() = default;
  Reorder(const memory::desc& from_md, const memory::desc& to_md) : from(from_md), to(to_md) {
    if (from_md != to_md) {
      prim = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from_md, cpu_engine(), to_md));
    }
  }
  // User data -> primitive layout (into the scratch of `role` when a reorder is needed).
  memory in(const void* user, ScratchRole role, dnnl::stream& s) const {
    memory user_mem(from, cpu_engine(), const_cast<void*>(user));
    if (!prim) return user_mem;
    memory mem(to, cpu_engine(), t_scratch[role].get(to.get_size()));
    prim->execute(s, user_mem, mem);
    return mem;
  }
  // Where a primitive writes a result destined for the user tensor.
  memory out_target(void* user, ScratchRole role) const {
    if (!prim) return memory(to, cpu_engine(), user);
    return memory(from, cpu_engine(), t_scratch[role].get(from.get_size()));
  }
  void finish_out(memory produced, void* user, dnnl::stream& s) const {
    if (!prim) return;
    memory user_mem(to, cpu_engine(), user);
    prim->execute(s, produced, user_mem);
  }
};

std::mutex g_plan_mutex;

void check_cpu_f32(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), "onednn ops run on CPU tensors only (", name, ")");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, "onednn ops take float32 tensors (", name, ")");
}

paddle::Tensor empty_f32(const memory::dims& dims) {
  return paddle::empty(std::vector<int64_t>(dims.begin(), dims.end()), paddle::DataType::FLOAT32,
                       paddle::CPUPlace());
}

// ------------------------------------------------------------------------------ convolution

struct ConvConfig {
  std::array<int64_t, 15> v;  // N C H W O KH KW SH SW PH PW relu need_input_grad blocked_in blocked_out
  bool operator<(const ConvConfig& o) const { return v < o.v; }
};

struct ConvPlan {
  memory::dims x_dims, w_dims, y_dims, strides, pad;
  bool relu, need_input_grad;
  memory::desc x_md, y_md;  // the layouts of the operator's activation tensors
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  Reorder x_fwd, w_fwd, y_fwd;

  bool bwd_ready = false;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_data bwd_data;
  Reorder dy_bwd_data, w_bwd_data, dx_bwd_data;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  dnnl::convolution_backward_weights bwd_w;
  Reorder x_bwd_w, dy_bwd_w, dw_bwd_w;
};

std::map<ConvConfig, std::unique_ptr<ConvPlan>> g_conv_plans;

ConvPlan& conv_plan(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, const std::vector<int>& strides,
                    const std::vector<int>& paddings, bool relu, bool need_input_grad, bool blocked_in,
                    bool blocked_out) {
  PD_CHECK(xs.size() == 4 && ws.size() == 4, "onednn_conv2d: expects an NCHW input and an OIHW weight");
  PD_CHECK(strides.size() == 2 && paddings.size() == 2, "onednn_conv2d: strides and paddings take 2 values");
  PD_CHECK(xs[1] == ws[1], "onednn_conv2d: the input has ", xs[1], " channels, the weight expects ", ws[1]);
  ConvConfig key{{xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], strides[0], strides[1], paddings[0], paddings[1],
                  relu, need_input_grad, blocked_in, blocked_out}};
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  auto found = g_conv_plans.find(key);
  if (found != g_conv_plans.end()) return *found->second;

  auto p = std::make_unique<ConvPlan>();
  p->x_dims = {xs[0], xs[1], xs[2], xs[3]};
  p->w_dims = {ws[0], ws[1], ws[2], ws[3]};
  const int64_t oh = (xs[2] + 2 * paddings[0] - ws[2]) / strides[0] + 1;
  const int64_t ow = (xs[3] + 2 * paddings[1] - ws[3]) / strides[1] + 1;
  PD_CHECK(oh > 0 && ow > 0, "onednn_conv2d: the output would be empty");
  p->y_dims = {xs[0], ws[0], oh, ow};
  p->strides = {strides[0], strides[1]};
  p->pad = {paddings[0], paddings[1]};
  p->relu = relu;
  p->need_input_grad = need_input_grad;
  p->x_md = activation(p->x_dims, blocked_in);
  p->y_md = activation(p->y_dims, blocked_out);

  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  const memory::desc bias_md({ws[0]}, dt::f32, tag::x);
  // Every primitive layout is left to oneDNN (format_tag::any): naming the blocked layout for
  // the first layer (3 input channels) drives it from im2col + GEMM to the reference kernel.
  p->fwd_pd = dnnl::convolution_forward::primitive_desc(
      cpu_engine(), prop_kind::forward_training, algorithm::convolution_direct, any(p->x_dims, dt::f32),
      any(p->w_dims, dt::f32), bias_md, any(p->y_dims, dt::f32), p->strides, p->pad, p->pad, attr);
  p->fwd = dnnl::convolution_forward(p->fwd_pd);
  p->x_fwd = Reorder(p->x_md, p->fwd_pd.src_desc());
  p->w_fwd = Reorder(memory::desc(p->w_dims, dt::f32, tag::oihw), p->fwd_pd.weights_desc());
  p->y_fwd = Reorder(p->fwd_pd.dst_desc(), p->y_md);
  ConvPlan& ref = *p;
  g_conv_plans.emplace(key, std::move(p));
  return ref;
}

void build_backward(ConvPlan& p) {
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  if (p.bwd_ready) return;
  const memory::desc w_user(p.w_dims, dt::f32, tag::oihw);
  if (p.need_input_grad) {
    p.bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(
        cpu_engine(), algorithm::convolution_direct, any(p.x_dims, dt::f32), any(p.w_dims, dt::f32),
        any(p.y_dims, dt::f32), p.strides, p.pad, p.pad, p.fwd_pd);
    p.bwd_data = dnnl::convolution_backward_data(p.bwd_data_pd);
    p.dy_bwd_data = Reorder(p.y_md, p.bwd_data_pd.diff_dst_desc());
    p.w_bwd_data = Reorder(w_user, p.bwd_data_pd.weights_desc());
    p.dx_bwd_data = Reorder(p.bwd_data_pd.diff_src_desc(), p.x_md);
  }
  const memory::desc bias_md({p.w_dims[0]}, dt::f32, tag::x);
  p.bwd_w_pd = dnnl::convolution_backward_weights::primitive_desc(
      cpu_engine(), algorithm::convolution_direct, any(p.x_dims, dt::f32), any(p.w_dims, dt::f32), bias_md,
      any(p.y_dims, dt::f32), p.strides, p.pad, p.pad, p.fwd_pd);
  p.bwd_w = dnnl::convolution_backward_weights(p.bwd_w_pd);
  p.x_bwd_w = Reorder(p.x_md, p.bwd_w_pd.src_desc());
  p.dy_bwd_w = Reorder(p.y_md, p.bwd_w_pd.diff_dst_desc());
  p.dw_bwd_w = Reorder(p.bwd_w_pd.diff_weights_desc(), w_user);
  p.bwd_ready = true;
}

std::vector<paddle::Tensor> ConvForwardImpl(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                            const paddle::Tensor& b_in, const std::vector<int>& strides,
                                            const std::vector<int>& paddings, bool fuse_relu,
                                            bool need_input_grad, bool blocked_in, bool blocked_out) {
  check_cpu_f32(x_in, "input");
  check_cpu_f32(w_in, "weight");
  check_cpu_f32(b_in, "bias");
  const paddle::Tensor x = x_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
  ConvPlan& p = conv_plan(x.shape(), w.shape(), strides, paddings, fuse_relu, need_input_grad, blocked_in,
                          blocked_out);
  paddle::Tensor y = empty_f32(p.y_dims);
  dnnl::stream s(cpu_engine());
  memory src = p.x_fwd.in(x.data<float>(), kSrc, s);
  memory wei = p.w_fwd.in(w.data<float>(), kWei, s);
  memory bias(memory::desc({p.w_dims[0]}, dt::f32, tag::x), cpu_engine(), const_cast<float*>(b.data<float>()));
  memory dst = p.y_fwd.out_target(y.data<float>(), kDst);
  p.fwd.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
  p.y_fwd.finish_out(dst, y.data<float>(), s);
  s.wait();
  return {y};
}

std::vector<paddle::Tensor> ConvBackwardImpl(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                             const paddle::Tensor& y, const paddle::Tensor& dy_in,
                                             const std::vector<int>& strides, const std::vector<int>& paddings,
                                             bool fuse_relu, bool need_input_grad, bool blocked_in,
                                             bool blocked_out) {
  const paddle::Tensor x = x_in.contiguous(), w = w_in.contiguous(), dy = dy_in.contiguous();
  ConvPlan& p = conv_plan(x.shape(), w.shape(), strides, paddings, fuse_relu, need_input_grad, blocked_in,
                          blocked_out);
  build_backward(p);
  dnnl::stream s(cpu_engine());

  // Through the fused ReLU: dy where the output is positive, as Paddle's relu_grad. y and dy
  // share one layout, so this is elementwise whatever the layout.
  const float* grad_out = dy.data<float>();
  if (fuse_relu) {
    const int64_t n = dy.numel();
    float* masked = static_cast<float*>(t_scratch[kMasked].get(n * sizeof(float)));
    const float* out = y.data<float>();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) masked[i] = out[i] > 0.f ? grad_out[i] : 0.f;
    grad_out = masked;
  }

  paddle::Tensor dw = empty_f32(p.w_dims);
  paddle::Tensor db = empty_f32({p.w_dims[0]});
  memory diff_dst_w = p.dy_bwd_w.in(grad_out, kDiffDst, s);
  memory src = p.x_bwd_w.in(x.data<float>(), kSrc, s);
  memory diff_wei = p.dw_bwd_w.out_target(dw.data<float>(), kDiffWei);
  memory diff_bias(memory::desc({p.w_dims[0]}, dt::f32, tag::x), cpu_engine(), db.data<float>());
  p.bwd_w.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst_w}, {DNNL_ARG_DIFF_WEIGHTS, diff_wei},
                      {DNNL_ARG_DIFF_BIAS, diff_bias}});
  p.dw_bwd_w.finish_out(diff_wei, dw.data<float>(), s);

  // Paddle requires every gradient output to be initialized, even the one of an input that
  // needs none (the image batch of the first layer); that one is an empty placeholder.
  paddle::Tensor dx = paddle::empty({0}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  if (need_input_grad) {
    dx = empty_f32(p.x_dims);
    // Both backward primitives normally pick the same diff_dst layout: reorder only once.
    memory diff_dst_d = p.dy_bwd_data.to == p.dy_bwd_w.to
                            ? memory(p.dy_bwd_data.to, cpu_engine(), diff_dst_w.get_data_handle())
                            : p.dy_bwd_data.in(grad_out, kDiffDstData, s);
    memory wei = p.w_bwd_data.in(w.data<float>(), kWei, s);
    memory diff_src = p.dx_bwd_data.out_target(dx.data<float>(), kDiffSrc);
    p.bwd_data.execute(s, {{DNNL_ARG_DIFF_DST, diff_dst_d}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, diff_src}});
    p.dx_bwd_data.finish_out(diff_src, dx.data<float>(), s);
  }
  s.wait();
  return {dx, dw, db};
}

std::vector<std::vector<int64_t>> ConvInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                                 const std::vector<int64_t>&, const std::vector<int>& strides,
                                                 const std::vector<int>& paddings, bool, bool, bool, bool) {
  return {{x[0], w[0], (x[2] + 2 * paddings[0] - w[2]) / strides[0] + 1,
           (x[3] + 2 * paddings[1] - w[3]) / strides[1] + 1}};
}

std::vector<paddle::DataType> ConvInferDtype(paddle::DataType x, paddle::DataType, paddle::DataType) { return {x}; }

// ------------------------------------------------------------------------------ max pooling

struct PoolPlan {
  memory::dims x_dims, y_dims, strides, kernel, pad;
  memory::desc x_md, y_md;  // the operator's tensors
  dnnl::pooling_forward::primitive_desc fwd_pd;
  dnnl::pooling_forward fwd;
  Reorder x_fwd, y_fwd;
  std::optional<dnnl::pooling_backward> bwd;
  dnnl::pooling_backward::primitive_desc bwd_pd;
  Reorder dy_bwd, dx_bwd;
};
std::map<std::array<int64_t, 12>, std::unique_ptr<PoolPlan>> g_pool_plans;

int64_t pool_out(int64_t in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

PoolPlan& pool_plan(const std::vector<int64_t>& xs, const std::vector<int>& k, const std::vector<int>& st,
                    const std::vector<int>& pd, bool blocked_in, bool blocked_out) {
  PD_CHECK(xs.size() == 4 && k.size() == 2 && st.size() == 2 && pd.size() == 2,
           "onednn_max_pool2d: expects an NCHW input and 2-value kernel, stride and padding");
  std::array<int64_t, 12> key{xs[0], xs[1], xs[2], xs[3], k[0], k[1], st[0], st[1], pd[0], pd[1],
                              blocked_in, blocked_out};
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  auto found = g_pool_plans.find(key);
  if (found != g_pool_plans.end()) return *found->second;
  auto p = std::make_unique<PoolPlan>();
  p->x_dims = {xs[0], xs[1], xs[2], xs[3]};
  p->y_dims = {xs[0], xs[1], pool_out(xs[2], k[0], st[0], pd[0]), pool_out(xs[3], k[1], st[1], pd[1])};
  PD_CHECK(p->y_dims[2] > 0 && p->y_dims[3] > 0, "onednn_max_pool2d: the output would be empty");
  p->strides = {st[0], st[1]};
  p->kernel = {k[0], k[1]};
  p->pad = {pd[0], pd[1]};
  p->x_md = activation(p->x_dims, blocked_in);
  p->y_md = activation(p->y_dims, blocked_out);
  // oneDNN pools plain NCHW with a slow generic kernel: work in the blocked layout whenever
  // the channels allow it, reordering a plain tensor in or out.
  const tag work = blocked_tag(xs[1]) != tag::undef ? blocked_tag(xs[1]) : tag::nchw;
  p->fwd_pd = dnnl::pooling_forward::primitive_desc(
      cpu_engine(), prop_kind::forward_training, algorithm::pooling_max, memory::desc(p->x_dims, dt::f32, work),
      memory::desc(p->y_dims, dt::f32, work), p->strides, p->kernel, {0, 0}, p->pad, p->pad);
  p->fwd = dnnl::pooling_forward(p->fwd_pd);
  p->x_fwd = Reorder(p->x_md, p->fwd_pd.src_desc());
  p->y_fwd = Reorder(p->fwd_pd.dst_desc(), p->y_md);
  PoolPlan& ref = *p;
  g_pool_plans.emplace(key, std::move(p));
  return ref;
}

std::vector<paddle::Tensor> PoolForwardImpl(const paddle::Tensor& x_in, const std::vector<int>& kernel,
                                            const std::vector<int>& strides, const std::vector<int>& paddings,
                                            bool blocked_in, bool blocked_out) {
  check_cpu_f32(x_in, "input");
  const paddle::Tensor x = x_in.contiguous();
  PoolPlan& p = pool_plan(x.shape(), kernel, strides, paddings, blocked_in, blocked_out);
  paddle::Tensor y = empty_f32(p.y_dims);
  const int64_t ws_bytes = static_cast<int64_t>(p.fwd_pd.workspace_desc().get_size());
  paddle::Tensor ws = paddle::empty({ws_bytes}, paddle::DataType::UINT8, paddle::CPUPlace());
  dnnl::stream s(cpu_engine());
  memory src = p.x_fwd.in(x.data<float>(), kSrc, s);
  memory dst = p.y_fwd.out_target(y.data<float>(), kDst);
  memory wsm(p.fwd_pd.workspace_desc(), cpu_engine(), ws.data<uint8_t>());
  p.fwd.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}, {DNNL_ARG_WORKSPACE, wsm}});
  p.y_fwd.finish_out(dst, y.data<float>(), s);
  s.wait();
  return {y, ws};
}

std::vector<paddle::Tensor> PoolBackwardImpl(const paddle::Tensor& x, const paddle::Tensor& ws,
                                             const paddle::Tensor& dy_in, const std::vector<int>& kernel,
                                             const std::vector<int>& strides, const std::vector<int>& paddings,
                                             bool blocked_in, bool blocked_out) {
  const paddle::Tensor dy = dy_in.contiguous();
  PoolPlan& p = pool_plan(x.shape(), kernel, strides, paddings, blocked_in, blocked_out);
  {
    std::lock_guard<std::mutex> lock(g_plan_mutex);
    if (!p.bwd) {
      p.bwd_pd = dnnl::pooling_backward::primitive_desc(
          cpu_engine(), algorithm::pooling_max, p.fwd_pd.src_desc(), p.fwd_pd.dst_desc(), p.strides, p.kernel,
          {0, 0}, p.pad, p.pad, p.fwd_pd);
      p.bwd = dnnl::pooling_backward(p.bwd_pd);
      p.dy_bwd = Reorder(p.y_md, p.bwd_pd.diff_dst_desc());
      p.dx_bwd = Reorder(p.bwd_pd.diff_src_desc(), p.x_md);
    }
  }
  paddle::Tensor dx = empty_f32(p.x_dims);
  dnnl::stream s(cpu_engine());
  memory diff_dst = p.dy_bwd.in(dy.data<float>(), kDiffDst, s);
  memory diff_src = p.dx_bwd.out_target(dx.data<float>(), kDiffSrc);
  memory wsm(p.fwd_pd.workspace_desc(), cpu_engine(), const_cast<uint8_t*>(ws.data<uint8_t>()));
  p.bwd->execute(s, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_SRC, diff_src}, {DNNL_ARG_WORKSPACE, wsm}});
  p.dx_bwd.finish_out(diff_src, dx.data<float>(), s);
  s.wait();
  return {dx};
}

std::vector<std::vector<int64_t>> PoolInferShape(const std::vector<int64_t>& x, const std::vector<int>& k,
                                                 const std::vector<int>& st, const std::vector<int>& pd, bool,
                                                 bool) {
  return {{x[0], x[1], pool_out(x[2], k[0], st[0], pd[0]), pool_out(x[3], k[1], st[1], pd[1])}, {-1}};
}

std::vector<paddle::DataType> PoolInferDtype(paddle::DataType x) { return {x, paddle::DataType::UINT8}; }

// oneDNN reports failures (e.g. a primitive it does not implement for this CPU) as
// dnnl::error; turned into Paddle errors they reach Python as exceptions, not std::terminate.
template <typename Fn>
auto guarded(const char* op, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const dnnl::error& e) {
    PD_THROW(op, ": oneDNN error (status ", static_cast<int>(e.status), "): ", e.what());
  }
}

std::vector<paddle::Tensor> ConvForward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b,
                                        const std::vector<int>& strides, const std::vector<int>& paddings,
                                        bool fuse_relu, bool need_input_grad, bool blocked_in,
                                        bool blocked_out) {
  return guarded("onednn_conv2d", [&] {
    return ConvForwardImpl(x, w, b, strides, paddings, fuse_relu, need_input_grad, blocked_in, blocked_out);
  });
}

std::vector<paddle::Tensor> ConvBackward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& y,
                                         const paddle::Tensor& dy, const std::vector<int>& strides,
                                         const std::vector<int>& paddings, bool fuse_relu,
                                         bool need_input_grad, bool blocked_in, bool blocked_out) {
  return guarded("onednn_conv2d_grad", [&] {
    return ConvBackwardImpl(x, w, y, dy, strides, paddings, fuse_relu, need_input_grad, blocked_in,
                            blocked_out);
  });
}

std::vector<paddle::Tensor> PoolForward(const paddle::Tensor& x, const std::vector<int>& kernel,
                                        const std::vector<int>& strides, const std::vector<int>& paddings,
                                        bool blocked_in, bool blocked_out) {
  return guarded("onednn_max_pool2d",
                 [&] { return PoolForwardImpl(x, kernel, strides, paddings, blocked_in, blocked_out); });
}

std::vector<paddle::Tensor> PoolBackward(const paddle::Tensor& x, const paddle::Tensor& ws, const paddle::Tensor& dy,
                                         const std::vector<int>& kernel, const std::vector<int>& strides,
                                         const std::vector<int>& paddings, bool blocked_in, bool blocked_out) {
  return guarded("onednn_max_pool2d_grad",
                 [&] { return PoolBackwardImpl(x, ws, dy, kernel, strides, paddings, blocked_in, blocked_out); });
}

std::vector<paddle::Tensor> BlockedChannels(const paddle::Tensor& x) {
  // How many channels one block of the blocked layout holds on this CPU (8 or 16).
  paddle::Tensor out = paddle::empty({1}, paddle::DataType::INT64, paddle::CPUPlace());
  *out.data<int64_t>() = blocked_tag(16) == tag::nChw16c ? 16 : 8;
  return {out};
}

}  // namespace

#define CONV_ATTRS                                                                                            \
  {                                                                                                           \
    "strides: std::vector<int>", "paddings: std::vector<int>", "fuse_relu: bool",               \
        "need_input_grad: bool", "blocked_input: bool", "blocked_output: bool"                                \
  }
#define POOL_ATTRS                                                                                            \
  {                                                                                                           \
    "kernel: std::vector<int>", "strides: std::vector<int>", "paddings: std::vector<int>",                    \
        "blocked_input: bool", "blocked_output: bool"                                                         \
  }

PD_BUILD_OP(onednn_conv2d)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs(CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(ConvForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(ConvInferDtype));

PD_BUILD_GRAD_OP(onednn_conv2d)
    .Inputs({"X", "W", "Out", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .Attrs(CONV_ATTRS)
    .SetKernelFn(PD_KERNEL(ConvBackward));

PD_BUILD_OP(onednn_max_pool2d)
    .Inputs({"X"})
    .Outputs({"Out", "Workspace"})
    .Attrs(POOL_ATTRS)
    .SetKernelFn(PD_KERNEL(PoolForward))
    .SetInferShapeFn(PD_INFER_SHAPE(PoolInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PoolInferDtype));

PD_BUILD_GRAD_OP(onednn_max_pool2d)
    .Inputs({"X", "Workspace", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs(POOL_ATTRS)
    .SetKernelFn(PD_KERNEL(PoolBackward));

PD_BUILD_OP(onednn_blocked_channels)
    .Inputs({"X"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(BlockedChannels));
