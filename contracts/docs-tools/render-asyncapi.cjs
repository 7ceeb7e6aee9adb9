// Renders an AsyncAPI document as one HTML page with AsyncAPI's own HTML template.
// Usage: node render-asyncapi.cjs <asyncapi.yaml> <output directory>
const path = require('path');
const Generator = require('@asyncapi/generator');

async function main() {
  const [document, output] = process.argv.slice(2);
  const template = path.dirname(require.resolve('@asyncapi/html-template/package.json'));
  const generator = new Generator(template, path.resolve(output), {
    forceWrite: true,
    templateParams: { singleFile: 'true' },
  });
  await generator.generateFromFile(path.resolve(document));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
