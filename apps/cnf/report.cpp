// apps/cnf/report.cpp — loss.png from a training log, and `cnf report DIR...`: one HTML page
// with every run's configuration, metrics, loss curve, tables and plots (images as data URIs,
// charts as inline SVG, a few lines of plain JavaScript to sort the table and toggle curves).
#include "apps/cnf/report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "apps/cnf/common.h"
#include "cnf/io/plot.h"
#include "cnf/version.h"

namespace cnf::app {
namespace fs = std::filesystem;

std::map<std::string, Curve> read_train_log(const std::string& folder) {
  std::map<std::string, Curve> out;
  std::ifstream in(fs::path(folder) / "train_log.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json row = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!row.is_object() || !row.contains("step") || !row["step"].is_number()) continue;
    const double step = row["step"].get<double>();
    for (const auto& [name, v] : row.items())
      if (name != "step" && v.is_number()) {
        out[name].step.push_back(step);
        out[name].value.push_back(v.get<double>());
      }
  }
  return out;
}

namespace {

/// A running mean over `window` rows (shorter at the start), for the smoothed loss.
std::vector<double> running_mean(const std::vector<double>& v, size_t window) {
  std::vector<double> out(v.size());
  double sum = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    sum += v[i];
    if (i >= window) sum -= v[i - window];
    out[i] = sum / static_cast<double>(std::min(i + 1, window));
  }
  return out;
}

bool all_positive(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return x > 0; });
}

}  // namespace

bool write_loss_plot(const std::string& folder) {
  const auto log = read_train_log(folder);
  const auto it = log.find("loss");
  if (it == log.end() || it->second.value.empty()) return false;
  const Curve& loss = it->second;
  io::Line raw{loss.step, loss.value, "loss (mean of each logged interval)"};
  raw.color = 0;
  raw.marker = -2;
  raw.width = 1.0;
  raw.opacity = 0.45;
  const size_t window = std::max<size_t>(1, loss.value.size() / 20);
  io::Line smooth{loss.step, running_mean(loss.value, window),
                  "running mean of " + std::to_string(window) + " rows"};
  smooth.color = 0;
  smooth.marker = -2;
  smooth.width = 2.2;
  io::ChartOptions o;
  o.title = "Training loss (" + fs::path(folder).filename().string() + ")";
  o.xlabel = "step";
  o.ylabel = "loss";
  o.yscale = all_positive(loss.value) ? io::Scale::log10 : io::Scale::linear;
  io::line_chart_png((fs::path(folder) / "loss.png").string(), {raw, smooth}, o);
  return true;
}

namespace {

std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint8_t>(bytes[i]) << 16 |
                       static_cast<uint8_t>(bytes[i + 1]) << 8 | static_cast<uint8_t>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += k[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? k[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string number(double v) {
  char buf[40];
  if (!std::isfinite(v)) return std::isnan(v) ? "NaN" : (v > 0 ? "inf" : "-inf");
  if (v == std::floor(v) && std::abs(v) < 1e9)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

/// One run folder and what it holds.
struct Run {
  fs::path dir;
  std::string name;                         // relative to the folder given on the command line
  std::map<std::string, double> numbers;    // flattened numeric metrics
  std::map<std::string, std::string> text;  // flattened text settings
  std::string problem;                      // a file that could not be read
  std::map<std::string, Curve> log;
};

/// Numbers and strings of a JSON object, nested objects flattened as a.b (two levels);
/// arrays are left out (tables are shown from the study's own files).
void flatten(const json& j, const std::string& prefix, int depth, Run& r) {
  for (const auto& [k, v] : j.items()) {
    const std::string key = prefix.empty() ? k : prefix + "." + k;
    if (v.is_number())
      r.numbers[key] = v.get<double>();
    else if (v.is_boolean())
      r.text[key] = v.get<bool>() ? "true" : "false";
    else if (v.is_string())
      r.text[key] = v.get<std::string>();
    else if (v.is_object() && depth < 2)
      flatten(v, key, depth + 1, r);
  }
}

bool is_run(const fs::path& dir) {
  std::error_code ec;
  for (const char* f : {"metrics.json", "results.json", "train_log.jsonl"})
    if (fs::is_regular_file(dir / f, ec)) return true;
  return false;
}

void find_runs(const fs::path& dir, const fs::path& root, int depth, std::vector<Run>& runs) {
  std::error_code ec;
  if (is_run(dir)) {
    Run r;
    r.dir = dir;
    const fs::path rel = fs::relative(dir, root, ec);
    r.name = (root.filename().empty() ? root.parent_path().filename() : root.filename()).string();
    if (!ec && rel != ".") r.name += "/" + rel.string();
    runs.push_back(std::move(r));
  }
  if (depth >= 8) return;
  std::vector<fs::path> children;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec) && !it->is_symlink(ec)) children.push_back(it->path());
  std::sort(children.begin(), children.end());
  for (const auto& c : children) find_runs(c, root, depth + 1, runs);
}

void load(Run& r) {
  for (const char* f : {"metrics.json", "results.json"}) {
    const fs::path file = r.dir / f;
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) continue;
    try {
      const json j = json::parse(io::read_text(file.string()));
      if (j.is_object()) flatten(j, "", 0, r);
    } catch (const std::exception& e) {
      r.problem += std::string(f) + " could not be read (" + e.what() + "). ";
    }
  }
  r.log = read_train_log(r.dir.string());
}

// ------------------------------------------------------------------ inline SVG charts

const char* const kColors[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

struct SvgSeries {
  std::string label;
  const Curve* curve;
};

/// Loss curves on shared axes (log y when every value is positive), at most 400 points each;
/// with several series a legend whose entries toggle their curve.
std::string svg_chart(const std::vector<SvgSeries>& series, const std::string& id) {
  const double W = 760, H = 340, L = 64, R = 16, T = 12, B = 44;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  bool positive = true;
  for (const auto& s : series)
    for (size_t i = 0; i < s.curve->step.size(); ++i) {
      const double v = s.curve->value[i];
      if (!std::isfinite(v)) continue;
      x0 = std::min(x0, s.curve->step[i]);
      x1 = std::max(x1, s.curve->step[i]);
      y0 = std::min(y0, v);
      y1 = std::max(y1, v);
      positive = positive && v > 0;
    }
  if (!(x0 <= x1)) return "<p class=note>no finite loss values logged</p>";
  if (x1 == x0) x1 = x0 + 1;
  const io::Scale ys = positive ? io::Scale::log10 : io::Scale::linear;
  auto f = [&](double v) { return positive ? std::log10(v) : v; };
  double a = f(y0), b = f(y1);
  if (b - a < 1e-12) {
    a -= 0.5;
    b += 0.5;
  }
  const double pad = 0.04 * (b - a);
  a -= pad;
  b += pad;
  y0 = positive ? std::pow(10.0, a) : a;
  y1 = positive ? std::pow(10.0, b) : b;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (b - f(y)) / (b - a) * (H - T - B); };
  // Every SVG attribute is quoted: an unquoted value before "/>" would swallow the slash.
  auto q = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "'%.1f'", v);
    return std::string(buf);
  };
  std::ostringstream o;
  o << "<svg class='chart' viewBox='0 0 " << W << " " << H << "' width='" << W << "' height='" << H
    << "' role='img' aria-label='loss against step'>";
  for (const auto& t : io::axis_ticks(y0, y1, ys)) {
    const double y = py(t.value);
    o << "<line x1=" << q(L) << " x2=" << q(W - R) << " y1=" << q(y) << " y2=" << q(y)
      << (t.major ? " class='grid'" : " class='minor'") << "/>";
    if (!t.label.empty())
      o << "<text x=" << q(L - 6) << " y=" << q(y + 4) << " text-anchor='end'>" << escape(t.label)
        << "</text>";
  }
  for (const auto& t : io::axis_ticks(x0, x1, io::Scale::linear)) {
    const double x = px(t.value);
    o << "<line x1=" << q(x) << " x2=" << q(x) << " y1=" << q(T) << " y2=" << q(H - B)
      << " class='grid'/><text x=" << q(x) << " y=" << q(H - B + 16) << " text-anchor='middle'>"
      << escape(t.label) << "</text>";
  }
  o << "<rect x=" << q(L) << " y=" << q(T) << " width=" << q(W - L - R)
    << " height=" << q(H - T - B) << " class='frame'/><text x=" << q((L + W - R) / 2)
    << " y=" << q(H - 8) << " text-anchor='middle'>step</text><text transform='translate(14 "
    << (T + H - B) / 2 << ") rotate(-90)' text-anchor='middle'>loss"
    << (positive ? " (log scale)" : "") << "</text>";
  for (size_t k = 0; k < series.size(); ++k) {
    const Curve& c = *series[k].curve;
    const size_t every = std::max<size_t>(1, c.step.size() / 400);
    o << "<polyline data-series='" << id << "-" << k << "' fill='none' stroke='" << kColors[k % 10]
      << "' stroke-width='1.6' points='";
    char pt[48];
    for (size_t i = 0; i < c.step.size(); i += every)
      if (std::isfinite(c.value[i]) && (!positive || c.value[i] > 0)) {
        std::snprintf(pt, sizeof pt, "%.1f,%.1f ", px(c.step[i]), py(c.value[i]));
        o << pt;
      }
    o << "'><title>" << escape(series[k].label) << "</title></polyline>";
  }
  o << "</svg>";
  if (series.size() > 1) {
    o << "<div class=legend>";
    for (size_t k = 0; k < series.size(); ++k)
      o << "<button type=button data-toggle='" << id << "-" << k
        << "'><span class=swatch style='background:" << kColors[k % 10] << "'></span>"
        << escape(series[k].label) << "</button>";
    o << "</div>";
  }
  return o.str();
}

// ------------------------------------------------------------------ the page

const char* const kStyle = R"(
body{font:14px/1.45 "DejaVu Sans",system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta,.note{color:#666}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer;user-select:none}th.asc:after{content:" \25B2"}th.desc:after{content:" \25BC"}
.wide{overflow-x:auto;max-height:560px;overflow-y:auto}
pre{background:#f7f7f7;border:1px solid #e4e4e4;padding:8px;overflow-x:auto;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0}.plots img{max-width:560px;border:1px solid #eee}
figcaption{font-size:12px;color:#555}svg.chart text{font-size:11px;fill:#333}
svg.chart .grid{stroke:#e2e2e2}svg.chart .minor{stroke:#f2f2f2}svg.chart .frame{fill:none;stroke:#888}
.legend button{border:1px solid #ddd;background:#fff;margin:2px;padding:2px 6px;cursor:pointer;font:inherit;font-size:12px}
.legend button.off{opacity:.35}.swatch{display:inline-block;width:14px;height:4px;margin-right:6px;vertical-align:middle}
.problem{color:#a00}.pair{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
)";

// Sorting by a column header (numbers as numbers, empty cells last) and toggling curves; at
// the end it marks the page ready, and any script error is recorded on the page, both for the
// browser check (make check-report).
const char* const kScript = R"(
window.addEventListener('error',function(e){document.documentElement.setAttribute('data-report-error',String(e.message))});
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
      th.classList.add(asc?'asc':'desc');
      var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[col].getAttribute('data-v'),y=b.cells[col].getAttribute('data-v');
        if(x===null&&y===null){x=a.cells[col].textContent;y=b.cells[col].textContent;return asc?x.localeCompare(y):y.localeCompare(x)}
        if(x===null)return 1;if(y===null)return -1;
        return asc?parseFloat(x)-parseFloat(y):parseFloat(y)-parseFloat(x)});
      rows.forEach(function(r){body.appendChild(r)})})})});
document.querySelectorAll('[data-toggle]').forEach(function(b){
  b.addEventListener('click',function(){
    var line=document.querySelector('[data-series="'+b.getAttribute('data-toggle')+'"]');
    if(!line)return;var off=line.style.display!=='none';line.style.display=off?'none':'';
    b.classList.toggle('off',off)})});
document.documentElement.setAttribute('data-report-ready','1');
)";

/// The metric columns of the side-by-side table: the usual figures of merit first, then every
/// other number some run has.
std::vector<std::string> metric_columns(const std::vector<Run>& runs) {
  const std::vector<std::string> first = {"w2",
                                          "w2_floor",
                                          "mmd2",
                                          "nfe",
                                          "final_loss",
                                          "nll",
                                          "bpd",
                                          "train_steps",
                                          "steps_per_second",
                                          "train_seconds",
                                          "sample_seconds"};
  std::set<std::string> all;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.numbers) all.insert(k);
  std::vector<std::string> out;
  for (const auto& k : first)
    if (all.erase(k)) out.push_back(k);
  out.insert(out.end(), all.begin(), all.end());
  return out;
}

std::string run_section(const Run& r, size_t index) {
  std::ostringstream o;
  const std::string id = "run-" + std::to_string(index);
  o << "<section id='" << id << "'><h2>" << escape(r.name) << "</h2>";
  o << "<p class=meta>" << escape(r.dir.string()) << "</p>";
  if (!r.problem.empty()) o << "<p class=problem>" << escape(r.problem) << "</p>";
  o << "<div class=pair>";  // metrics beside the loss curve
  if (!r.numbers.empty() || !r.text.empty()) {
    o << "<div><h3>Metrics and settings</h3><div class=wide><table><tr><th>name</th><th>value"
         "</th></tr>";
    for (const auto& [k, v] : r.numbers)
      o << "<tr><td>" << escape(k) << "</td><td>" << number(v) << "</td></tr>";
    for (const auto& [k, v] : r.text)
      o << "<tr><td>" << escape(k) << "</td><td>" << escape(v) << "</td></tr>";
    o << "</table></div></div>";
  }
  if (auto it = r.log.find("loss"); it != r.log.end())
    o << "<div><h3>Loss</h3>" << svg_chart({{r.name, &it->second}}, id) << "</div>";
  o << "</div>";
  std::error_code ec;
  if (fs::is_regular_file(r.dir / "config.toml", ec))
    o << "<details><summary>config.toml</summary><pre>"
      << escape(io::read_text((r.dir / "config.toml").string())) << "</pre></details>";
  // Study tables (markdown) as they are written.
  std::vector<fs::path> files;
  for (fs::directory_iterator it(r.dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) files.push_back(it->path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files)
    if (f.extension() == ".md" && fs::file_size(f, ec) < (1u << 20))
      o << "<h3>" << escape(f.filename().string()) << "</h3><pre>"
        << escape(io::read_text(f.string())) << "</pre>";
  bool any = false;
  for (const auto& f : files) {
    if (f.extension() != ".png") continue;
    if (!any) o << "<h3>Plots</h3><div class=plots>";
    any = true;
    const auto size = fs::file_size(f, ec);
    o << "<figure>";
    if (ec || size > (8u << 20))
      o << "<p class=note>" << escape(f.filename().string()) << " is too large to inline</p>";
    else
      o << "<img loading=lazy alt='" << escape(f.filename().string())
        << "' src='data:image/png;base64," << base64(io::read_text(f.string())) << "'>";
    o << "<figcaption>" << escape(f.filename().string()) << "</figcaption></figure>";
  }
  if (any) o << "</div>";
  o << "</section>";
  return o.str();
}

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

}  // namespace

int write_report(const std::vector<std::string>& folders, const std::string& out,
                 const std::string& title) {
  CNF_CHECK(!folders.empty(), "cnf report: give at least one folder");
  std::vector<Run> runs;
  for (const auto& f : folders) {
    std::error_code ec;
    CNF_CHECK(fs::is_directory(f, ec), "cnf report: '", f,
              "' is not a folder; give the output folders of cnf train, demo or experiment");
    const size_t before = runs.size();
    const fs::path root = fs::path(f).lexically_normal();
    find_runs(root, root, 0, runs);
    CNF_CHECK(runs.size() > before, "cnf report: no run found under '", f,
              "' (a run folder holds metrics.json, results.json or train_log.jsonl)");
  }
  for (auto& r : runs) load(r);

  std::ostringstream o;
  o << "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
       "content='width=device-width,initial-scale=1'><title>"
    << escape(title) << "</title><style>" << kStyle << "</style></head><body><h1>" << escape(title)
    << "</h1><p class=meta>" << runs.size() << " run" << (runs.size() == 1 ? "" : "s") << " under ";
  for (size_t i = 0; i < folders.size(); ++i)
    o << (i ? ", " : "") << "<code>" << escape(folders[i]) << "</code>";
  o << "; written " << now_text() << " by cnf " << CNF_VERSION << "</p>";

  if (runs.size() > 1) {
    const auto columns = metric_columns(runs);
    o << "<h2>Runs side by side</h2><p class=note>Click a column to sort.</p><div class=wide>"
         "<table class=sortable id=runs><thead><tr><th>run</th>";
    for (const auto& c : columns) o << "<th>" << escape(c) << "</th>";
    o << "</tr></thead><tbody>";
    for (size_t i = 0; i < runs.size(); ++i) {
      o << "<tr><td><a href='#run-" << i << "'>" << escape(runs[i].name) << "</a></td>";
      for (const auto& c : columns) {
        const auto it = runs[i].numbers.find(c);
        if (it == runs[i].numbers.end())
          o << "<td></td>";
        else
          o << "<td data-v='" << (std::isfinite(it->second) ? number(it->second) : "NaN") << "'>"
            << number(it->second) << "</td>";
      }
      o << "</tr>";
    }
    o << "</tbody></table></div>";
    std::vector<SvgSeries> curves;
    for (const auto& r : runs)
      if (auto it = r.log.find("loss"); it != r.log.end()) curves.push_back({r.name, &it->second});
    if (curves.size() > 1) o << "<h2>Loss curves</h2>" << svg_chart(curves, "all");
  }
  for (size_t i = 0; i < runs.size(); ++i) o << run_section(runs[i], i);
  o << "<script>" << kScript << "</script></body></html>\n";
  io::write_text_atomic(out, o.str());
  return static_cast<int>(runs.size());
}

void report_after(const std::string& folder) {
  const char* launched = std::getenv("CNF_LAUNCHED");
  const char* rank = std::getenv("RANK");
  if ((launched != nullptr && *launched != '\0') || (rank != nullptr && std::string(rank) != "0"))
    return;  // the launcher (or rank 0) writes it once
  std::error_code ec;
  if (folder.empty() || !fs::is_directory(folder, ec) || !is_run(folder)) return;
  try {
    const std::string out = (fs::path(folder) / "report.html").string();
    const int n = write_report({folder}, out, "cnf report: " + folder);
    std::fprintf(stderr, "report: %s (%d run%s)\n", out.c_str(), n, n == 1 ? "" : "s");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cnf: warning: no report written: %s\n", e.what());
  }
}

namespace {

struct ReportArgs {
  std::vector<std::string> folders;
  std::string out, title = "cnf report";
};

}  // namespace

Runner add_report_command(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  auto* cmd = app.add_subcommand(
      "report",
      "Write one self-contained HTML page (no network needed) over every run under the "
      "folders: configuration, metrics, loss curves, tables and plots; with several runs a "
      "sortable table side by side and the loss curves overlaid");
  cmd->add_option("folders", a->folders,
                  "Output folders of cnf train, demo or experiment (searched 8 levels deep)")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--out", a->out, "The page to write (default: FOLDER/report.html of the first)");
  cmd->add_option("--title", a->title, "Heading of the page")->capture_default_str();
  return [cmd, a]() -> int {
    if (!cmd->parsed()) return -1;
    const std::string out =
        a->out.empty() ? (fs::path(a->folders[0]) / "report.html").string() : a->out;
    const int n = write_report(a->folders, out, a->title);
    std::printf("wrote %s (%d run%s)\n", out.c_str(), n, n == 1 ? "" : "s");
    return 0;
  };
}

}  // namespace cnf::app
