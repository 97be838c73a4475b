#include "cnf/train/checkpoint.h"

#include <torch/torch.h>

#include <fstream>
#include <vector>

#include "archive.h"
#include "archive_check.h"
#include "cnf/core/error.h"
#include "cnf/data/images.h"

namespace cnf::train {

std::string read_string(torch::serialize::InputArchive& ar, const std::string& key,
                        const std::string& path) {
  c10::IValue v;
  CNF_CHECK(ar.try_read(key, v) && v.isString(), "checkpoint '", path, "' has no '", key,
            "' field; it was not written by cnf train (or is from an incompatible version)");
  return v.toStringRef();
}

torch::serialize::InputArchive open_archive(const std::string& path) {
  {
    std::ifstream probe(path, std::ios::binary);
    CNF_CHECK(probe.good(), "cannot open checkpoint '", path,
              "': no such file or no permission; pass the .pt file written by cnf train");
  }
  check_checkpoint_archive(path);
  torch::serialize::InputArchive ar;
  try {
    ar.load_from(path);
  } catch (const std::exception& e) {
    std::string why = e.what();
    why = why.substr(0, why.find('\n'));
    fail("checkpoint '", path, "' is truncated or not a cnf checkpoint (", why,
         "); use an intact .pt file written by cnf train");
  }
  auto format = read_string(ar, "format", path);
  CNF_CHECK(format == "cnf-checkpoint-1", "checkpoint '", path, "' has format '", format,
            "', this cnf reads 'cnf-checkpoint-1'");
  return ar;
}

void load_module(torch::serialize::InputArchive& ar, const std::string& key, torch::nn::Module& m,
                 const std::string& path) {
  torch::serialize::InputArchive sub;
  CNF_CHECK(ar.try_read(key, sub), "checkpoint '", path, "' has no '", key, "' weights");
  try {
    m.load(sub);
  } catch (const std::exception& e) {
    std::string why = e.what();
    fail("checkpoint '", path, "': the '", key, "' weights do not fit the network of its spec (",
         why.substr(0, why.find('\n')), ")");
  }
}

FlowSpec read_flow_spec(const std::string& path) {
  auto ar = open_archive(path);
  return FlowSpec::parse(read_string(ar, "spec", path), path);
}

Checkpoint load_checkpoint(const std::string& path, c10::Device device,
                           const NetworkFactory& make_network, bool ema) {
  auto ar = open_archive(path);
  Checkpoint c;
  c.spec = FlowSpec::parse(read_string(ar, "spec", path), path);
  c.config = read_string(ar, "config", path);
  c10::IValue step;
  if (ar.try_read("step", step) && step.isInt()) c.step = step.toInt();
  if (c.spec.model.arch == kCustomArch)
    CNF_CHECK(make_network, "checkpoint '", path, "' holds a network built by a program's own ",
              "NetworkFactory (arch=custom); load it with train::load_checkpoint(path, device, ",
              "factory) and that factory");
  if (c.spec.model.arch == "torchscript")
    CNF_CHECK(make_network, "checkpoint '", path, "' holds a fine-tuned TorchScript module (",
              c.spec.module, "); load it with interop::load_flow (cnf's verbs do)");
  c.network = build_network(make_network, c.spec.model);
  torch::serialize::InputArchive probe;
  load_module(ar, ema && ar.try_read("ema", probe) ? "ema" : "model", *c.network, path);
  c.network->to(device);
  c.network->eval();
  c.model = c.spec.velocity_field(c.network);
  c.model->eval();
  type_checkpoint(c);
  return c;
}

void type_checkpoint(Checkpoint& c) {
  c.schedule = c.spec.make_schedule();
  c.prior = data::make_source(c.spec.prior, c.spec.model.dim);
}

at::Tensor to_pixels(const FlowSpec& spec, const at::Tensor& rows) {
  CNF_CHECK(data::is_image_spec(spec.data), "the model of '", spec.data,
            "' is not an image model; its samples have no pixels");
  auto x = rows.to(torch::kCPU, torch::kFloat32);
  const auto image = data::parse_image_spec(spec.data);
  auto shape = spec.model.height > 0 ? std::vector<int64_t>{spec.model.channels, spec.model.height,
                                                            spec.model.width_px}
                                     : image.shape();
  if (shape.empty())  // a PNG-folder model from before the layout was recorded
    return data::load_image_spec(spec.data).train->to_pixels(x);
  CNF_CHECK(x.dim() == 2 && x.size(1) == shape[0] * shape[1] * shape[2], "rows of shape ",
            x.sizes(), " are not images of ", shape[0], "x", shape[1], "x", shape[2], " pixels");
  return image.transform.inverse(x).reshape({x.size(0), shape[0], shape[1], shape[2]});
}

}  // namespace cnf::train
