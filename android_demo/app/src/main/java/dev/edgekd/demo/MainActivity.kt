package dev.edgekd.demo

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.activity.viewModels
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.compose.foundation.Image
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.DisposableEffect
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.layout.ContentScale
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.text.font.FontWeight
import androidx.compose.ui.unit.dp
import androidx.compose.ui.viewinterop.AndroidView
import androidx.core.content.ContextCompat
import androidx.lifecycle.LifecycleOwner
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

class MainActivity : ComponentActivity() {
    private val viewModel: DemoViewModel by viewModels()

    /** Camera frames are analysed off the main thread, one at a time (KEEP_ONLY_LATEST). */
    private lateinit var analysisExecutor: ExecutorService

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        analysisExecutor = Executors.newSingleThreadExecutor()
        setContent {
            MaterialTheme {
                Surface(modifier = Modifier.fillMaxSize()) {
                    DemoScreen(viewModel, this, analysisExecutor)
                }
            }
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        analysisExecutor.shutdown()
    }
}

@Composable
fun DemoScreen(vm: DemoViewModel, lifecycleOwner: LifecycleOwner, executor: ExecutorService) {
    val state by vm.state.collectAsState()
    val context = LocalContext.current
    var cameraGranted by remember {
        mutableStateOf(
            ContextCompat.checkSelfPermission(context, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED
        )
    }
    var showAbout by remember { mutableStateOf(false) }
    val askCamera = rememberLauncherForActivityResult(ActivityResultContracts.RequestPermission()) { cameraGranted = it }
    // Android's photo picker (falls back to the document picker before Android 11): no storage permission.
    val pickImage = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) {
            vm.clearImageError()
            vm.classifyUri(uri)
        }
    }

    Column(modifier = Modifier.fillMaxSize().padding(16.dp)) {
        Text("edgekd demo", style = MaterialTheme.typography.headlineSmall)
        Text(
            text = when {
                state.loading -> "Loading model\u2026"
                state.model != null -> "Model: ${state.model}"
                else -> "No model loaded"
            },
            style = MaterialTheme.typography.bodyMedium,
            fontFamily = FontFamily.Monospace,
        )
        Spacer(Modifier.height(8.dp))
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(
                enabled = state.model != null,
                onClick = {
                    vm.setMode(Mode.CAMERA)
                    if (!cameraGranted) askCamera.launch(Manifest.permission.CAMERA)
                },
            ) { Text("Camera") }
            OutlinedButton(
                enabled = state.model != null,
                onClick = {
                    pickImage.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
                },
            ) { Text("Gallery image") }
            OutlinedButton(enabled = state.about != null, onClick = { showAbout = true }) { Text("About this model") }
        }
        val about = state.about
        if (showAbout && about != null) {
            AboutModelDialog(about, onDismiss = { showAbout = false })
        }
        Spacer(Modifier.height(8.dp))
        Box(modifier = Modifier.weight(1f).fillMaxWidth(), contentAlignment = Alignment.Center) {
            val error = state.error
            val image = state.galleryImage
            when {
                error != null -> Text(
                    text = error,
                    color = MaterialTheme.colorScheme.error,
                    style = MaterialTheme.typography.titleMedium,
                )
                state.loading || state.model == null -> Text("\u2026")
                state.mode == Mode.CAMERA && cameraGranted -> CameraPreview(lifecycleOwner, executor, vm::analyze)
                state.mode == Mode.CAMERA -> Text("Camera permission is needed for live classification.")
                image != null -> Image(
                    bitmap = image.asImageBitmap(),
                    contentDescription = "selected image",
                    contentScale = ContentScale.Fit,
                    modifier = Modifier.fillMaxSize(),
                )
                else -> Text("Pick an image from the gallery.")
            }
        }
        Spacer(Modifier.height(8.dp))
        ResultPanel(state.result)
    }
}

@Composable
fun ResultPanel(result: Classification?) {
    Column(modifier = Modifier.fillMaxWidth()) {
        if (result == null) {
            Text("No result yet", style = MaterialTheme.typography.bodyMedium)
        } else {
            Results(result)
        }
    }
}

@Composable
private fun Results(result: Classification) {
    Column(modifier = Modifier.fillMaxWidth()) {
        result.top.forEachIndexed { rank, r ->
            Row(modifier = Modifier.fillMaxWidth(), horizontalArrangement = Arrangement.SpaceBetween) {
                Text(
                    "${rank + 1}. ${r.label}",
                    fontWeight = if (rank == 0) FontWeight.Bold else FontWeight.Normal,
                    style = MaterialTheme.typography.titleMedium,
                )
                Text(String.format(Locale.ROOT, "%.1f %%", r.score * 100f), style = MaterialTheme.typography.titleMedium)
            }
        }
        Text(
            String.format(
                Locale.ROOT, "preprocess %.1f ms \u00b7 inference %.1f ms \u00b7 total %.1f ms",
                result.preprocessMs, result.inferenceMs, result.totalMs,
            ),
            style = MaterialTheme.typography.bodySmall,
            fontFamily = FontFamily.Monospace,
        )
    }
}

/** CameraX preview + ImageAnalysis bound to the activity's lifecycle; frames go to [onFrame]. */
@Composable
fun CameraPreview(lifecycleOwner: LifecycleOwner, executor: ExecutorService, onFrame: (Bitmap) -> Unit) {
    val context = LocalContext.current
    val previewView = remember { PreviewView(context) }
    DisposableEffect(lifecycleOwner) {
        val providerFuture = ProcessCameraProvider.getInstance(context)
        var provider: ProcessCameraProvider? = null
        providerFuture.addListener({
            val p = providerFuture.get()
            provider = p
            val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
            val analysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(executor) { image ->
                try {
                    onFrame(image.toUprightBitmap())
                } finally {
                    image.close()
                }
            }
            // tablets may only have a front camera
            val selector = if (p.hasCamera(CameraSelector.DEFAULT_BACK_CAMERA)) {
                CameraSelector.DEFAULT_BACK_CAMERA
            } else {
                CameraSelector.DEFAULT_FRONT_CAMERA
            }
            p.unbindAll()
            p.bindToLifecycle(lifecycleOwner, selector, preview, analysis)
        }, ContextCompat.getMainExecutor(context))
        onDispose { provider?.unbindAll() }
    }
    AndroidView(factory = { previewView }, modifier = Modifier.fillMaxSize())
}
