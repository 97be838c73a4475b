// cnf experiment images — Lipman et al. 2023, table 1 at CPU scale: score matching on a
// diffusion (VP) path, flow matching on the same path and flow matching on the OT path,
// one network and one training budget, compared by bits/dim, a classifier-feature Fréchet
// distance and dopri5 NFE. Runs in stages (classifier, train, eval), each resumable.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "apps/cnf/common.h"
#include "apps/cnf/evaluation.h"
#include "apps/cnf/images.h"
#include "cnf/data/images.h"
#include "cnf/density/image_density.h"
#include "cnf/io/image_grid.h"
#include "cnf/io/progress.h"
#include "cnf/metrics/image_quality.h"
#include "cnf/nn/unet.h"
#include "cnf/train/trainer.h"

namespace cnf::app {

// ------------------------------------------------------------------ shared helpers

torch::Tensor sample_labels(const std::string& label, int64_t n, int64_t classes) {
  if (label.empty()) return {};
  CNF_CHECK(classes > 0, "--label needs a class-conditional model (trained with --classes K)");
  if (label == "all") return torch::arange(n, torch::kLong) % classes;
  int64_t k = -1;
  try {
    size_t used = 0;
    k = std::stoll(label, &used);
    CNF_CHECK(used == label.size(), "");
  } catch (const std::exception&) {
    fail("--label must be a class number, 'all', or empty, got '", label, "'");
  }
  CNF_CHECK(k >= 0 && k < classes, "--label ", k, " is not a class of the model (0..", classes - 1,
            ")");
  return torch::full({n}, k, torch::kLong);
}

nn::VelocityField with_labels(nn::VelocityField net, const torch::Tensor& labels, double guidance) {
  if (!labels.defined()) return net;
  return std::make_shared<nn::GuidedFieldImpl>(std::move(net), labels, guidance);
}

void write_sample_grid(const std::string& path, const train::FlowSpec& spec,
                       const torch::Tensor& rows, int64_t max_images, int64_t columns) {
  auto px = train::to_pixels(spec, rows.slice(0, 0, std::min(max_images, rows.size(0))));
  io::image_grid_png(path, px, columns, px.size(2) <= 14 ? 3 : 2);
}

namespace {

namespace fs = std::filesystem;

struct ImagesArgs {
  Common common;
  std::string data = "fashion-mnist:size=14";
  std::string methods = "sm-diffusion,fm-diffusion,fm-ot";
  std::string stage = "all";
  std::string out = "out/images";
  // Network (one for all methods).
  int64_t width = 32;
  std::string channel_mult = "1,2";
  int64_t res_blocks = 1;
  bool attention = false;
  bool conditional = true;
  // Training budget (the same for every method).
  int64_t steps = 2000;
  int64_t batch_size = 64;
  double lr = 1e-3;
  double ema_decay = 0.999;
  int64_t warmup_steps = 200;
  int64_t checkpoint_every = 250;
  int64_t chunk = 0;
  // Classifier.
  int64_t classifier_steps = 1500;
  // Evaluation.
  int64_t bpd_n = 200;
  int64_t dequant_samples = 1;
  int64_t fd_n = 500;
  int64_t cond_n = 200;
  double guidance = 1.0;
  double rtol = 1e-5, atol = 1e-5;
  bool quiet = false;
};

struct Method {
  std::string name, objective, schedule, label;
};

Method method_of(const std::string& name) {
  if (name == "sm-diffusion") return {name, "score", "vp", "score matching, VP (diffusion) path"};
  if (name == "fm-diffusion") return {name, "fm", "vp", "flow matching, VP (diffusion) path"};
  if (name == "fm-ot") return {name, "fm", "condot", "flow matching, OT path"};
  fail("unknown method '", name, "'; valid: sm-diffusion, fm-diffusion, fm-ot");
}

std::string classifier_path(const ImagesArgs& a) { return a.out + "/classifier.pt"; }

void stage_classifier(const ImagesArgs& a) {
  if (fs::exists(classifier_path(a))) {
    if (!a.quiet)
      std::fprintf(stderr, "images: %s exists, skipping the classifier stage\n",
                   classifier_path(a).c_str());
    return;
  }
  auto split = data::load_image_spec(a.data);
  metrics::ClassifierOptions co;
  co.steps = a.classifier_steps;
  co.seed = a.common.seed;
  io::Progress progress(co.steps, "images: classifier", !a.quiet);
  auto t0 = std::chrono::steady_clock::now();
  auto net = metrics::train_classifier(split.train->images(), co, [&](int64_t step, double loss) {
    if (step % 50 == 0) progress.update(step, "loss " + std::to_string(loss));
  });
  progress.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto px = split.test.levels.to(torch::kFloat32).add(0.5).div(256.0);
  const double acc = metrics::classifier_accuracy(*net, px, split.test.labels);
  metrics::save_classifier(*net, classifier_path(a));
  json j = {{"test_accuracy", acc},
            {"test_images", px.size(0)},
            {"steps", co.steps},
            {"train_seconds", secs},
            {"data", a.data}};
  io::write_text_atomic(a.out + "/classifier.json", j.dump(2) + "\n");
  std::printf("classifier: test accuracy %.4f on %lld images (%lld steps, %.0f s)\n", acc,
              static_cast<long long>(px.size(0)), static_cast<long long>(co.steps), secs);
}

train::FlowSpec flow_spec(const ImagesArgs& a, const Method& m) {
  train::FlowSpec spec;
  spec.data = a.data;
  spec.schedule = m.schedule;
  spec.objective = m.objective;
  spec.model.arch = "unet";
  spec.model.width = a.width;
  spec.model.channel_mult = a.channel_mult;
  spec.model.res_blocks = a.res_blocks;
  spec.model.attention = a.attention;
  return spec;
}

// Trains (or continues) one method; returns true when its budget is done.
bool stage_train(const ImagesArgs& a, const Method& m, torch::Device device) {
  const std::string dir = a.out + "/" + m.name, ckpt = dir + "/model.pt";
  make_dir(dir);
  auto split = data::load_image_spec(a.data);
  auto spec = flow_spec(a, m);
  if (a.conditional) spec.model.classes = split.train->images().classes;
  train::TrainOptions o;
  o.steps = a.steps;
  o.batch_size = a.batch_size;
  o.lr = a.lr;
  o.lr_schedule = train::LrSchedule::cosine;
  o.warmup_steps = a.warmup_steps;
  o.ema_decay = a.ema_decay;
  o.grad_clip = 1.0;
  o.seed = a.common.seed;
  o.device = device;
  auto prior = data::make_source("normal", split.train->dim());
  train::Trainer trainer(spec, o, split.train, prior);
  if (fs::exists(ckpt)) trainer.resume(ckpt);
  if (trainer.steps_done() >= o.steps) {
    if (!a.quiet)
      std::fprintf(stderr, "images: %s already trained (%lld steps)\n", m.name.c_str(),
                   static_cast<long long>(trainer.steps_done()));
    return true;
  }
  const int64_t start = trainer.steps_done();
  const int64_t stop = a.chunk > 0 ? std::min(o.steps, start + a.chunk) : o.steps;
  const std::string config = "# cnf experiment images, method " + m.name + "\n";
  io::Progress progress(o.steps, "images: " + m.name, !a.quiet);
  auto t0 = std::chrono::steady_clock::now();
  double loss = 0;
  trainer.run([&](int64_t step, const objective::LossResult& r) {
    if (step % 25 == 0) {
      loss = r.loss.item<double>();
      progress.update(step, "loss " + std::to_string(loss));
    }
    if (step % a.checkpoint_every == 0) trainer.save(ckpt, config);
    return step < stop;
  });
  progress.finish();
  trainer.save(ckpt, config);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Wall time accumulates over the calls that trained this method.
  json log = json::object();
  if (fs::exists(dir + "/train.json")) log = json::parse(io::read_text(dir + "/train.json"));
  log["steps"] = trainer.steps_done();
  log["train_seconds"] = log.value("train_seconds", 0.0) + secs;
  log["parameters"] = nn::count_parameters(*trainer.model());
  log["last_loss"] = loss;
  io::write_text_atomic(dir + "/train.json", log.dump(2) + "\n");
  std::printf("%s: %lld / %lld steps (%.0f s this call)\n", m.name.c_str(),
              static_cast<long long>(trainer.steps_done()), static_cast<long long>(o.steps), secs);
  return trainer.steps_done() >= o.steps;
}

// Class-conditional samples of every class, guided (weight a.guidance): the classifier's
// accuracy on them into `j`, and a grid by class.
void add_guided_scores(const ImagesArgs& a, const train::Checkpoint& c,
                       const data::ImageSplit& split, metrics::ImageClassifierImpl& classifier,
                       const ode::SolveOptions& so, at::Generator& noise_gen,
                       const std::string& dir, json& j, torch::Device device) {
  auto labels = sample_labels("all", a.cond_n, c.spec.model.classes);
  auto guided = c.spec.velocity_field(with_labels(c.network, labels.to(device), a.guidance));
  auto x = c.prior->sample(a.cond_n, noise_gen).to(device);
  auto cs = train::generate(*guided, *c.schedule, x, so);
  auto cpx = split.train->to_pixels(cs.y[0].to(torch::kCPU));
  j["cond_accuracy"] = metrics::classifier_accuracy(classifier, cpx, labels);
  j["cond_samples"] = a.cond_n;
  j["guidance"] = a.guidance;
  j["cond_nfe"] = cs.nfe;
  io::image_grid_png(dir + "/samples_by_class.png",
                     cpx.slice(0, 0, std::min<int64_t>(a.cond_n, 10 * c.spec.model.classes)),
                     c.spec.model.classes, 3);
}

json stage_eval(const ImagesArgs& a, const Method& m, torch::Device device) {
  const std::string dir = a.out + "/" + m.name, ckpt = dir + "/model.pt";
  CNF_CHECK(fs::exists(ckpt), "no model for ", m.name, " in ", dir,
            "; run cnf experiment images --stage train first");
  auto c = train::load_checkpoint(ckpt, device);
  auto classifier = metrics::load_classifier(classifier_path(a));
  auto split = data::load_image_spec(a.data);
  const auto& schedule = c.schedule;
  const auto& prior = c.prior;
  const auto so = ode::SolveOptions::of("dopri5", 1, a.rtol, a.atol);

  // Bits/dim of test images (unconditional: no label is the null label).
  const int64_t n_bpd = std::min(a.bpd_n, split.test.levels.size(0));
  density::LikelihoodOptions lo;
  lo.solve = so;
  lo.divergence.method = density::Divergence::hutchinson;
  lo.t_start = c.spec.likelihood_start();  // where each model was trained down to
  auto gen = stream_generator(a.common.seed, Stream::images_bpd);
  auto t0 = std::chrono::steady_clock::now();
  auto bpd = density::image_bits_per_dim(*c.model, *schedule, *prior, *split.train,
                                         split.test.levels.slice(0, 0, n_bpd), a.dequant_samples,
                                         lo, gen, 100);
  const double bpd_secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Unconditional samples: Fréchet distance to as many test images; the same noise for
  // every method (seeded generator).
  auto noise_gen = stream_generator(a.common.seed, Stream::images_samples);
  const int64_t n_fd = std::min(a.fd_n, split.test.levels.size(0));
  auto x_1 = prior->sample(n_fd, noise_gen).to(device);
  t0 = std::chrono::steady_clock::now();
  auto sol = train::generate(*c.model, *schedule, x_1, so);
  const double sample_secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto samples = sol.y[0].to(torch::kCPU);
  check_finite(samples, "generated samples");
  auto px = split.train->to_pixels(samples);
  auto test_px = split.test.levels.slice(0, 0, n_fd).to(torch::kFloat32).add(0.5).div(256.0);
  const double fd = metrics::frechet_distance(metrics::classifier_features(*classifier, px),
                                              metrics::classifier_features(*classifier, test_px));
  // The floor: two disjoint sets of test images of the same size.
  double fd_floor = -1;
  if (split.test.levels.size(0) >= 2 * n_fd) {
    auto other = split.test.levels.slice(0, n_fd, 2 * n_fd).to(torch::kFloat32).add(0.5).div(256.0);
    fd_floor = metrics::frechet_distance(metrics::classifier_features(*classifier, other),
                                         metrics::classifier_features(*classifier, test_px));
  }
  io::image_grid_png(dir + "/samples.png", px.slice(0, 0, std::min<int64_t>(100, n_fd)), 10, 3);

  json j = {
      {"method", m.name},
      {"label", m.label},
      {"bits_per_dim", bpd.bpd.mean},
      {"bits_per_dim_stderr", bpd.bpd.stderr},
      {"bpd_images", n_bpd},
      {"dequantization_samples", a.dequant_samples},
      {"bpd_divergence", "hutchinson, 1 Rademacher probe"},
      {"bpd_nfe_per_solve", static_cast<double>(bpd.nfe) /
                                static_cast<double>(a.dequant_samples * ((n_bpd + 99) / 100))},
      {"bpd_seconds", bpd_secs},
      {"fd", fd},
      {"fd_floor", fd_floor},
      {"fd_samples", n_fd},
      {"nfe", sol.nfe},
      {"sample_seconds", sample_secs},
      {"rtol", a.rtol},
      {"steps", c.step}};
  // Class-conditional samples, guided, scored by the classifier's accuracy.
  if (c.spec.model.classes > 0 && a.cond_n > 0)
    add_guided_scores(a, c, split, *classifier, so, noise_gen, dir, j, device);
  if (fs::exists(dir + "/train.json")) {
    auto t = json::parse(io::read_text(dir + "/train.json"));
    j["train_seconds"] = t.value("train_seconds", 0.0);
    j["parameters"] = t.value("parameters", 0);
  }
  io::write_text_atomic(dir + "/eval.json", j.dump(2) + "\n");
  return j;
}

std::string table_of(const ImagesArgs& a, const std::vector<std::string>& names) {
  std::string t =
      "| method | bits/dim | Fréchet distance (classifier features) | dopri5 NFE | "
      "class accuracy (guided) | train time |\n|---|---|---|---|---|---|\n";
  for (const auto& name : names) {
    const std::string path = a.out + "/" + name + "/eval.json";
    if (!fs::exists(path)) continue;
    auto j = json::parse(io::read_text(path));
    char row[512];
    std::snprintf(row, sizeof row,
                  "| %s | %.3f ± %.3f | %.2f (floor %.2f) | %lld | %s | %.0f s |\n",
                  j.value("label", name).c_str(), j.value("bits_per_dim", 0.0),
                  j.value("bits_per_dim_stderr", 0.0), j.value("fd", 0.0),
                  j.value("fd_floor", -1.0), static_cast<long long>(j.value("nfe", 0)),
                  j.contains("cond_accuracy")
                      ? (std::to_string(j.value("cond_accuracy", 0.0)).substr(0, 5) +
                         " (w = " + std::to_string(j.value("guidance", 0.0)).substr(0, 4) + ")")
                            .c_str()
                      : "–",
                  j.value("train_seconds", 0.0));
    t += row;
  }
  return t;
}

int run_images(const ImagesArgs& a) {
  auto device = setup(a.common);
  CNF_CHECK(a.stage == "all" || a.stage == "classifier" || a.stage == "train" || a.stage == "eval",
            "--stage must be all, classifier, train or eval, got '", a.stage, "'");
  CNF_CHECK(a.steps >= 1 && a.batch_size >= 1 && a.checkpoint_every >= 1 && a.chunk >= 0,
            "--steps, --batch-size and --checkpoint-every must be >= 1, --chunk >= 0");
  CNF_CHECK(a.bpd_n >= 1 && a.fd_n >= 2 && a.cond_n >= 0 && a.dequant_samples >= 1,
            "--bpd-n >= 1, --fd-n >= 2, --cond-n >= 0 and --dequant-samples >= 1 needed");
  auto names = split_list(a.methods);
  CNF_CHECK(!names.empty(), "--methods is empty; give e.g. sm-diffusion,fm-diffusion,fm-ot");
  std::vector<Method> methods;
  for (const auto& n : names) methods.push_back(method_of(n));
  make_dir(a.out);
  if (a.stage == "all" || a.stage == "classifier") stage_classifier(a);
  bool trained = true;
  if (a.stage == "all" || a.stage == "train")
    for (const auto& m : methods) trained = stage_train(a, m, device) && trained;
  if (a.stage == "eval" || (a.stage == "all" && trained)) {
    json results = json::array();
    for (const auto& m : methods) {
      if (!a.quiet) std::fprintf(stderr, "images: evaluating %s\n", m.name.c_str());
      results.push_back(stage_eval(a, m, device));
    }
    const auto table = table_of(a, {"sm-diffusion", "fm-diffusion", "fm-ot"});
    io::write_text_atomic(a.out + "/images.md", table);
    write_json(a.common.json, results);
    std::printf("%s", table.c_str());
    std::printf(
        "wrote %s/{images.md, classifier.json, */eval.json, */samples.png, "
        "*/samples_by_class.png}\n",
        a.out.c_str());
  } else if (!trained) {
    std::printf("training not finished; run the same command again to continue\n");
  }
  return 0;
}

}  // namespace

std::function<int()> add_images_experiment(CLI::App* experiment) {
  auto a = std::make_shared<ImagesArgs>();
  auto* cmd = experiment->add_subcommand(
      "images",
      "Score matching vs flow matching on a diffusion path vs flow matching on the OT "
      "path, on images: bits/dim, classifier Fréchet distance, dopri5 NFE (Lipman et "
      "al. 2023, table 1)");
  add_common(cmd, a->common);
  cmd->add_option("--data", a->data,
                  "Image data spec (fashion-mnist[:size=S:classes=..:n=..] "
                  "or png:FOLDER)")
      ->capture_default_str();
  cmd->add_option("--methods", a->methods, "Comma-separated: sm-diffusion, fm-diffusion, fm-ot")
      ->capture_default_str()
      ->check(one_of({"sm-diffusion", "fm-diffusion", "fm-ot"}, "method", true));
  cmd->add_option("--stage", a->stage, "all, classifier, train or eval (each resumable)")
      ->capture_default_str()
      ->check(one_of({"all", "classifier", "train", "eval"}, "stage"));
  cmd->add_option("--out", a->out, "Output folder")->capture_default_str();
  cmd->add_option("--width", a->width, "U-Net base channels")->capture_default_str();
  cmd->add_option("--channel-mult", a->channel_mult, "U-Net channel multipliers per level")
      ->capture_default_str();
  cmd->add_option("--res-blocks", a->res_blocks, "U-Net residual blocks per level")
      ->capture_default_str();
  cmd->add_flag("--attention", a->attention, "Self-attention at the lowest resolution");
  cmd->add_option("--conditional", a->conditional,
                  "Class-conditional models with label dropout 0.1 (true/false)")
      ->capture_default_str();
  cmd->add_option("--steps", a->steps, "Training steps per method")->capture_default_str();
  cmd->add_option("--batch-size", a->batch_size, "Minibatch size")->capture_default_str();
  cmd->add_option("--lr", a->lr, "Peak learning rate (cosine schedule)")->capture_default_str();
  cmd->add_option("--ema-decay", a->ema_decay, "EMA decay of the evaluated weights")
      ->capture_default_str();
  cmd->add_option("--warmup-steps", a->warmup_steps, "LR warm-up steps")->capture_default_str();
  cmd->add_option("--checkpoint-every", a->checkpoint_every, "Checkpoint period (steps)")
      ->capture_default_str();
  cmd->add_option("--chunk", a->chunk,
                  "Train at most this many steps per method in this call (0: to the end)")
      ->capture_default_str();
  cmd->add_option("--classifier-steps", a->classifier_steps, "Classifier training steps")
      ->capture_default_str();
  cmd->add_option("--bpd-n", a->bpd_n, "Test images for bits/dim")->capture_default_str();
  cmd->add_option("--dequant-samples", a->dequant_samples,
                  "Uniform dequantization draws per test image")
      ->capture_default_str();
  cmd->add_option("--fd-n", a->fd_n, "Samples (and test images) for the Fréchet distance")
      ->capture_default_str();
  cmd->add_option("--cond-n", a->cond_n, "Class-conditional samples for the accuracy")
      ->capture_default_str();
  cmd->add_option("--guidance", a->guidance, "Classifier-free guidance weight w")
      ->capture_default_str();
  cmd->add_option("--rtol", a->rtol, "dopri5 rtol")->capture_default_str();
  cmd->add_option("--atol", a->atol, "dopri5 atol")->capture_default_str();
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  return [cmd, a]() { return cmd->parsed() ? run_images(*a) : -1; };
}

}  // namespace cnf::app
