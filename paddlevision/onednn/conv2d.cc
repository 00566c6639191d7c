// Paddle custom CPU operators running oneDNN's 2-D convolution, float32: the forward pass
// with its bias, and the backward pass giving the input (when asked), weight and bias
// gradients. Tensors at the boundary are plain NCHW / OIHW, exactly what Paddle's conv2d
// takes and gives; inside, each primitive gets the layout oneDNN prefers (format_tag::any)
// through reorders. The operators have no gradient of their own: paddlevision/onednn ties
// the two together in a PyLayer. Primitives are built once per configuration and kept.

#include <array>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
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

memory::desc any(const memory::dims& dims) { return memory::desc(dims, dt::f32, tag::any); }

// A 64-byte aligned, growing scratch buffer; one per role and thread, reused across calls.
class Scratch {
 public:
  ~Scratch() { std::free(ptr_); }
  void* get(size_t bytes) {
    if (bytes > capacity_) {
      // Empty until the new buffer exists: a failed allocation leaves no stale capacity.
      std::free(ptr_);
      ptr_ = nullptr;
      capacity_ = 0;
      const size_t rounded = (bytes + 63) / 64 * 64;
      ptr_ = std::aligned_alloc(64, rounded);
      PD_CHECK(ptr_ != nullptr, "onednn_conv2d: out of memory allocating ", rounded, " bytes");
      capacity_ = rounded;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t capacity_ = 0;
};

enum ScratchRole { kSrc, kWei, kDst, kDiffDst, kDiffDstData, kDiffSrc, kDiffWei, kNumRoles };
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

void check_cpu_f32(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), "onednn_conv2d runs on CPU tensors only (", name, ")");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, "onednn_conv2d takes float32 tensors (", name, ")");
}

paddle::Tensor empty_f32(const memory::dims& dims) {
  return paddle::empty(std::vector<int64_t>(dims.begin(), dims.end()), paddle::DataType::FLOAT32,
                       paddle::CPUPlace());
}

// Every number a primitive descriptor is made from: N C H W, O KH KW, strides, paddings.
using ConvKey = std::array<int64_t, 11>;

struct ConvPlan {
  memory::dims x_dims, w_dims, y_dims, strides, pad;
  memory::desc x_md, w_md, y_md, b_md;  // the operators' tensors: NCHW, OIHW, NCHW, X
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  Reorder x_fwd, w_fwd, y_fwd;

  std::optional<dnnl::convolution_backward_weights> bwd_w;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  Reorder x_bwd_w, dy_bwd_w, dw_bwd_w;

  std::optional<dnnl::convolution_backward_data> bwd_data;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  Reorder dy_bwd_data, w_bwd_data, dx_bwd_data;
};

std::mutex g_plan_mutex;
std::map<ConvKey, std::unique_ptr<ConvPlan>> g_plans;

ConvPlan& conv_plan(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, const std::vector<int>& strides,
                    const std::vector<int>& paddings) {
  PD_CHECK(xs.size() == 4 && ws.size() == 4, "onednn_conv2d: expects an NCHW input and an OIHW weight");
  PD_CHECK(strides.size() == 2 && paddings.size() == 2, "onednn_conv2d: strides and paddings take 2 values");
  PD_CHECK(xs[1] == ws[1], "onednn_conv2d: the input has ", xs[1], " channels, the weight expects ", ws[1]);
  const ConvKey key{xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], strides[0], strides[1], paddings[0], paddings[1]};
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  auto found = g_plans.find(key);
  if (found != g_plans.end()) return *found->second;

  auto p = std::make_unique<ConvPlan>();
  const int64_t oh = (xs[2] + 2 * paddings[0] - ws[2]) / strides[0] + 1;
  const int64_t ow = (xs[3] + 2 * paddings[1] - ws[3]) / strides[1] + 1;
  PD_CHECK(oh > 0 && ow > 0, "onednn_conv2d: the output would be empty");
  p->x_dims = {xs[0], xs[1], xs[2], xs[3]};
  p->w_dims = {ws[0], ws[1], ws[2], ws[3]};
  p->y_dims = {xs[0], ws[0], oh, ow};
  p->strides = {strides[0], strides[1]};
  p->pad = {paddings[0], paddings[1]};
  p->x_md = memory::desc(p->x_dims, dt::f32, tag::nchw);
  p->w_md = memory::desc(p->w_dims, dt::f32, tag::oihw);
  p->y_md = memory::desc(p->y_dims, dt::f32, tag::nchw);
  p->b_md = memory::desc({ws[0]}, dt::f32, tag::x);
  p->fwd_pd = dnnl::convolution_forward::primitive_desc(
      cpu_engine(), prop_kind::forward_training, algorithm::convolution_direct, any(p->x_dims), any(p->w_dims),
      p->b_md, any(p->y_dims), p->strides, p->pad, p->pad);
  p->fwd = dnnl::convolution_forward(p->fwd_pd);
  p->x_fwd = Reorder(p->x_md, p->fwd_pd.src_desc());
  p->w_fwd = Reorder(p->w_md, p->fwd_pd.weights_desc());
  p->y_fwd = Reorder(p->fwd_pd.dst_desc(), p->y_md);
  ConvPlan& plan = *p;
  g_plans.emplace(key, std::move(p));
  return plan;
}

void build_backward(ConvPlan& p, bool need_input_grad) {
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  if (!p.bwd_w) {
    p.bwd_w_pd = dnnl::convolution_backward_weights::primitive_desc(
        cpu_engine(), algorithm::convolution_direct, any(p.x_dims), any(p.w_dims), p.b_md, any(p.y_dims),
        p.strides, p.pad, p.pad, p.fwd_pd);
    p.bwd_w = dnnl::convolution_backward_weights(p.bwd_w_pd);
    p.x_bwd_w = Reorder(p.x_md, p.bwd_w_pd.src_desc());
    p.dy_bwd_w = Reorder(p.y_md, p.bwd_w_pd.diff_dst_desc());
    p.dw_bwd_w = Reorder(p.bwd_w_pd.diff_weights_desc(), p.w_md);
  }
  if (need_input_grad && !p.bwd_data) {
    p.bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(
        cpu_engine(), algorithm::convolution_direct, any(p.x_dims), any(p.w_dims), any(p.y_dims), p.strides, p.pad,
        p.pad, p.fwd_pd);
    p.bwd_data = dnnl::convolution_backward_data(p.bwd_data_pd);
    p.dy_bwd_data = Reorder(p.y_md, p.bwd_data_pd.diff_dst_desc());
    p.w_bwd_data = Reorder(p.w_md, p.bwd_data_pd.weights_desc());
    p.dx_bwd_data = Reorder(p.bwd_data_pd.diff_src_desc(), p.x_md);
  }
}

std::vector<paddle::Tensor> ConvForwardImpl(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                            const paddle::Tensor& b_in, const std::vector<int>& strides,
                                            const std::vector<int>& paddings) {
  check_cpu_f32(x_in, "input");
  check_cpu_f32(w_in, "weight");
  check_cpu_f32(b_in, "bias");
  const paddle::Tensor x = x_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
  ConvPlan& p = conv_plan(x.shape(), w.shape(), strides, paddings);
  paddle::Tensor y = empty_f32(p.y_dims);
  dnnl::stream s(cpu_engine());
  memory src = p.x_fwd.in(x.data<float>(), kSrc, s);
  memory wei = p.w_fwd.in(w.data<float>(), kWei, s);
  memory bias(p.b_md, cpu_engine(), const_cast<float*>(b.data<float>()));
  memory dst = p.y_fwd.out_target(y.data<float>(), kDst);
  p.fwd.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
  p.y_fwd.finish_out(dst, y.data<float>(), s);
  s.wait();
  return {y};
}

std::vector<paddle::Tensor> ConvBackwardImpl(const paddle::Tensor& x_in, const paddle::Tensor& w_in,
                                             const paddle::Tensor& dy_in, const std::vector<int>& strides,
                                             const std::vector<int>& paddings, bool need_input_grad) {
  check_cpu_f32(dy_in, "output gradient");
  const paddle::Tensor x = x_in.contiguous(), w = w_in.contiguous(), dy = dy_in.contiguous();
  ConvPlan& p = conv_plan(x.shape(), w.shape(), strides, paddings);
  PD_CHECK(dy.shape() == std::vector<int64_t>(p.y_dims.begin(), p.y_dims.end()),
           "onednn_conv2d_backward: the output gradient does not have the output's shape");
  build_backward(p, need_input_grad);
  dnnl::stream s(cpu_engine());

  paddle::Tensor dw = empty_f32(p.w_dims);
  paddle::Tensor db = empty_f32({p.w_dims[0]});
  memory diff_dst_w = p.dy_bwd_w.in(dy.data<float>(), kDiffDst, s);
  memory src = p.x_bwd_w.in(x.data<float>(), kSrc, s);
  memory diff_wei = p.dw_bwd_w.out_target(dw.data<float>(), kDiffWei);
  memory diff_bias(p.b_md, cpu_engine(), db.data<float>());
  p.bwd_w->execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst_w}, {DNNL_ARG_DIFF_WEIGHTS, diff_wei},
                       {DNNL_ARG_DIFF_BIAS, diff_bias}});
  p.dw_bwd_w.finish_out(diff_wei, dw.data<float>(), s);

  // An input that needs no gradient (the image batch) gets an empty placeholder.
  paddle::Tensor dx = paddle::empty({0}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  if (need_input_grad) {
    dx = empty_f32(p.x_dims);
    // Both backward primitives normally pick the same diff_dst layout: reorder only once.
    memory diff_dst_d = p.dy_bwd_data.to == p.dy_bwd_w.to
                            ? memory(p.dy_bwd_data.to, cpu_engine(), diff_dst_w.get_data_handle())
                            : p.dy_bwd_data.in(dy.data<float>(), kDiffDstData, s);
    memory wei = p.w_bwd_data.in(w.data<float>(), kWei, s);
    memory diff_src = p.dx_bwd_data.out_target(dx.data<float>(), kDiffSrc);
    p.bwd_data->execute(s, {{DNNL_ARG_DIFF_DST, diff_dst_d}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, diff_src}});
    p.dx_bwd_data.finish_out(diff_src, dx.data<float>(), s);
  }
  s.wait();
  return {dx, dw, db};
}

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
                                        const std::vector<int>& strides, const std::vector<int>& paddings) {
  return guarded("onednn_conv2d", [&] { return ConvForwardImpl(x, w, b, strides, paddings); });
}

std::vector<paddle::Tensor> ConvBackward(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& dy,
                                         const std::vector<int>& strides, const std::vector<int>& paddings,
                                         bool need_input_grad) {
  return guarded("onednn_conv2d_backward",
                 [&] { return ConvBackwardImpl(x, w, dy, strides, paddings, need_input_grad); });
}

}  // namespace

PD_BUILD_OP(onednn_conv2d)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>"})
    .SetKernelFn(PD_KERNEL(ConvForward));

PD_BUILD_OP(onednn_conv2d_backward)
    .Inputs({"X", "W", "OutGrad"})
    .Outputs({"XGrad", "WGrad", "BGrad"})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>", "need_input_grad: bool"})
    .SetKernelFn(PD_KERNEL(ConvBackward));
